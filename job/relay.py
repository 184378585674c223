"""Tune callbacks and a stopper that survive `Tuner.restore`.

Tune pickles a search's callbacks and stopper with it and, on restore, runs with those
copies: cut off from this process's progress counts, tracking and storage-fault flag. So
the search is given a Relay and a Stop from this module (pickled by reference: the job's
folder is on sys.path), and they pass every hook to what this process set live here.
"""

from __future__ import annotations

from ray.tune import Callback, Stopper

# The live callbacks of this process's search, and whether it must stop.
LIVE: list[Callback] = []
STOP = {"all": False}

# Every hook Tune calls on a callback, always with keyword arguments.
HOOKS = (
    "setup",
    "on_step_begin",
    "on_step_end",
    "on_trial_start",
    "on_trial_restore",
    "on_trial_save",
    "on_trial_result",
    "on_trial_complete",
    "on_trial_recover",
    "on_trial_error",
    "on_checkpoint",
    "on_experiment_end",
)


def _relay(hook: str):
    def call(self, **info):
        for cb in LIVE:
            getattr(cb, hook)(**info)

    call.__name__ = hook
    return call


class Relay(Callback):
    pass


for _hook in HOOKS:
    setattr(Relay, _hook, _relay(_hook))


class Stop(Stopper):
    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return STOP["all"]


def live(callbacks: list[Callback]) -> None:
    """Make these the search's callbacks, for its first run and any restore of it."""
    LIVE[:] = callbacks
    STOP["all"] = False
