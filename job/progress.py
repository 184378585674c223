"""The search's Tune callback: each finished trial reported as a progress line, storage watched."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import relay
import space as spacemod
import storage
import tune_format
from protocol import PROGRESS_MARKER, emit

# ---- modes ----------------------------------------------------------------------------


class Progress:
    """Tune callback: one progress line per finished trial; remembers retried trials."""

    def __init__(
        self,
        total: int,
        restoring: bool = False,
        plan: list | None = None,
        asha: dict | None = None,
    ):
        """plan: each config's [work, rounds] in the order the trials run (None where an
        adaptive search makes them); asha: its grace, reduction factor and max rounds."""
        from ray.tune import Callback

        outer = self

        class _CB(Callback):
            # Where a search's first seconds go (docs/benchmarks.md): Tune's controller
            # starting, then each trial's actor ready (placed, started, its __init__ run).
            def setup(self, **info):
                outer.controller_started_at = outer.controller_started_at or time.time()

            def on_trial_start(self, iteration, trials, trial, **info):
                outer.actor_ready_at.setdefault(trial.trial_id, time.time())

            def on_trial_complete(self, iteration, trials, trial, **info):
                outer.done += 1
                rmse = trial.last_result.get("rmse")
                if rmse is not None and (outer.best is None or rmse < outer.best):
                    outer.best = rmse
                now = time.time()
                ready = outer.actor_ready_at
                # What the launcher's live ETA replays (rayscale/eta.py): this trial's time
                # and work, and each trial still running: its age, rounds done and work.
                others = [
                    t
                    for t in trials
                    if t.status == "RUNNING" and t.trial_id in ready and t is not trial
                ]
                rec = {
                    "done": outer.done,
                    "total": outer.total,
                    "best_rmse": outer.best,
                    "trial": trial.trial_id,
                    "at": round(now, 3),
                    "trial_s": round(now - ready.get(trial.trial_id, now), 3),
                    "running_s": [round(now - ready[t.trial_id], 3) for t in others],
                    "work": _work(trial),
                    "running": [[_rounds(t), *_size(t)] for t in others],
                    "started": len(ready),
                }
                if not outer.plan_sent:  # once per search: the trials in the order they run
                    rec.update(plan=outer.plan, asha=outer.asha)
                    outer.plan_sent = True
                emit(PROGRESS_MARKER, rec)

            def on_step_end(self, iteration, trials, **info):
                if outer.state_copy and not outer.storage_fault:
                    outer.state_copy.save()

            def on_trial_error(self, iteration, trials, trial, **info):
                outer.errored.add(trial.trial_id)
                outer.check_storage(trial)

            def on_trial_recover(self, iteration, trials, trial, **info):
                outer.retried.setdefault(trial.trial_id, 0)
                outer.retried[trial.trial_id] += 1
                outer.check_storage(trial)

        self.total, self.done, self.best = total, 0, None
        self.plan, self.asha, self.plan_sent = plan, asha, False
        self.controller_started_at: float | None = None
        self.actor_ready_at: dict[str, float] = {}
        self.retried: dict[str, int] = {}
        self.errored: set[str] = set()
        self.storage_fault: str | None = None
        self.restoring, self.interrupted = restoring, False
        self.state_copy: storage.StateCopy | None = None
        self.callback = _CB()

    def check_storage(self, trial) -> None:
        """A trial that failed writing to the storage path (full, read-only, gone) will fail
        the same way on every retry, and so will every trial after it: end the search."""
        try:
            # The error file is in the driver's own staging dir, not on the storage path.
            text = Path(trial.error_file).read_text() if trial.error_file else ""
        except OSError:
            return
        text = tune_format.last_failure(text)
        fault = storage.fault_of(text, self.restoring)
        if fault and not self.storage_fault:
            self.storage_fault = fault
            self.interrupted = interrupt_search()
            self.stop_if_faulted()

    def stop_if_faulted(self) -> None:
        """The fallback where Tune's Ctrl-C handler is not installed (a search run off the
        main thread): the stopper ends the search."""
        relay.STOP["all"] = self.storage_fault is not None and not self.interrupted


def interrupt_search() -> bool:
    """End the search as Ctrl-C does (SIGINT, Tune's documented stop): Tune saves its state
    one last time with the trials in flight still unfinished, so `job resume` runs them
    again. A stopper's stop_all would mark them TERMINATED, as if they had finished, and a
    resume would never run them. False where Tune installed no handler for it."""
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler) or handler is signal.default_int_handler:
        return False
    signal.raise_signal(signal.SIGINT)
    return True


def _size(trial) -> list:
    """[work, rounds] of a trial's whole config (space.cost: rounds x 2^depth x sampling)."""
    cfg = (trial.config or {}).get("cfg") or {}
    return [round(spacemod.cost(cfg), 1), int(cfg.get("num_boost_round") or 0)]


def _rounds(trial) -> int:
    return int((trial.last_result or {}).get("rounds") or 0)


def _work(trial) -> float:
    """The work a trial did: its config's, in the share of its rounds it trained."""
    work, rounds = _size(trial)
    return round(work * min(1.0, _rounds(trial) / rounds), 1) if rounds else work
