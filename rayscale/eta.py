"""A running search's time left, from the trials finished so far: `job submit`, `job logs
--follow` and `job status` show it.

Each finished trial's progress record (job/progress.py) carries the trial's time and work
(its config's rounds x 2^depth x row and column sampling, in the share of rounds it
trained), and each trial still running: its age, rounds done and work; the first record
lists every config's work in the order the trials run. Time is fitted to work over the
trials finished (a power law, least squares in logs), and the rest of the search is
replayed over the slots in use: a running trial ends at its fitted time, a pending trial
takes its fitted time on the slot that frees first, each times a residual drawn from the
finished trials; under ASHA each trial stops or goes on at each rung as the scheduler's
reduction factor makes likely. Over 200 draws the median is the estimate and the 10th and
90th percentiles its spread; with a price per hour, the money spent so far and at the
estimated end. A search whose configs are not known at the start (Optuna) draws the
pending trials' times from the finished ones. Before the first trial ends there is nothing
to fit, and no estimate.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
import time
from dataclasses import dataclass, field

from rayscale.jobs import PROGRESS_MARKER as MARKER  # the job's progress lines

DRAWS = 200


@dataclass
class Eta:
    """What the progress records so far say of the search's end."""

    started: float | None = None  # the first record's clock less its trial's time
    records: list[dict] = field(default_factory=list)
    plan: list | None = None  # each config's [work, rounds], in the order the trials run
    asha: dict | None = None  # grace, rf, max (rounds)

    def add(self, rec: dict) -> None:
        """One progress record. One without a trial's time (a job from before the estimate,
        the joblib baseline) leaves no estimate; a count that starts again (the job's next
        mode, a resumed search) starts the estimate again."""
        if "trial_s" not in rec or (self.records and rec["done"] <= self.records[-1]["done"]):
            self.records.clear()
            self.started, self.plan, self.asha = None, None, None
        if "trial_s" not in rec:
            return
        if "plan" in rec:
            self.plan, self.asha = rec["plan"], rec.get("asha")
        if self.started is None:
            self.started = rec["at"] - rec["trial_s"]
        self.records.append(rec)

    def estimate(self, now: float | None = None, seed: int = 0) -> dict | None:
        """{left_s, left_s_p10, left_s_p90, end_at, done, running, pending}; None before the
        first trial ends."""
        if not self.records:
            return None
        last = self.records[-1]
        rng = random.Random(seed)
        ages = list(last.get("running_s") or [])
        if self.plan is not None and "running" in last:
            model = _fit([(r["work"], r["trial_s"]) for r in self.records])
            running = [(age, *r) for age, r in zip(ages, last["running"], strict=False)]
            todo = self.plan[last["started"] :]
            pending = len(todo)
            ends = sorted(_replay_work(model, running, todo, self.asha, rng) for _ in range(DRAWS))
        else:
            costs = [r["trial_s"] for r in self.records]
            pending = max(0, last["total"] - last["done"] - len(ages))
            slots = max(1, len(ages) + (1 if pending else 0))
            ends = sorted(_replay(costs, ages, pending, slots, rng) for _ in range(DRAWS))
        running = ages
        since = max(0.0, (now or time.time()) - last["at"])
        left = [max(0.0, e - since) for e in ends]
        mid = statistics.median(left)
        return {
            "done": last["done"],
            "running": len(running),
            "pending": pending,
            "left_s": round(mid, 1),
            "left_s_p10": round(left[len(left) // 10], 1),
            "left_s_p90": round(left[(len(left) * 9) // 10], 1),
            "end_at": round((now or time.time()) + mid, 1),
        }


def _replay(costs: list[float], running: list[float], pending: int, slots: int, rng) -> float:
    """One draw: seconds from the last record to the search's end."""
    free = []
    for ran in running:
        longer = [c for c in costs if c > ran]
        free.append(rng.choice(longer) - ran if longer else 0.0)
    free += [0.0] * (slots - len(free))
    heapq.heapify(free)
    for _ in range(pending):
        heapq.heappush(free, heapq.heappop(free) + rng.choice(costs))
    return max(free) if free else 0.0


@dataclass(frozen=True)
class Model:
    """A trial's time: scale x work^power, times one of the residuals."""

    scale: float
    power: float
    residuals: tuple[float, ...]

    def fitted(self, work: float) -> float:
        return self.scale * max(work, 1e-9) ** self.power

    def time(self, work: float, rng) -> float:
        return self.fitted(work) * rng.choice(self.residuals)


def _fit(points: list[tuple[float, float]]) -> Model:
    """Least squares of log time on log work (a trial's time grows slower than its work
    where the data, not the depth, bounds a tree); where it cannot say (fewer than three
    sizes of trial), time in proportion to work."""
    pts = [(w, t) for w, t in points if w > 0 and t > 0] or [(1.0, 1.0)]
    power = 1.0
    if len({w for w, _ in pts}) >= 3:
        xs, ys = [math.log(w) for w, _ in pts], [math.log(t) for _, t in pts]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        power = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
        power = min(1.5, max(0.1, power))
    scale = math.exp(statistics.fmean(math.log(t) - power * math.log(w) for w, t in pts))
    model = Model(scale, power, (1.0,))
    return Model(scale, power, tuple(t / model.fitted(w) for w, t in pts))


def _asha_rounds(done: int, rounds: int, asha: dict | None, rng) -> int:
    """The rounds a trial at DONE rounds ends at: all of them under FIFO; under ASHA it goes
    past each rung still ahead with chance 1 / reduction factor."""
    if not asha:
        return rounds
    rung = asha["grace"]
    while rung < min(rounds, asha["max"]):
        if rung > done and rng.random() >= 1 / asha["rf"]:
            return rung
        rung *= asha["rf"]
    return rounds


def _replay_work(model: Model, running: list, todo: list, asha: dict | None, rng) -> float:
    """One draw with the work model: seconds from the last record to the search's end.
    running: (age, rounds done, work, rounds) each; todo: [work, rounds] each, in order."""
    free = []
    for age, done, work, rounds in running:
        share = _asha_rounds(done, rounds, asha, rng) / rounds if rounds else 1.0
        free.append(max(0.0, model.time(work * share, rng) - age))
    free += [0.0] * (len(running) + (1 if todo else 0) - len(free))
    heapq.heapify(free)
    for work, rounds in todo:
        share = _asha_rounds(0, rounds, asha, rng) / rounds if rounds else 1.0
        heapq.heappush(free, heapq.heappop(free) + model.time(work * share, rng))
    return max(free) if free else 0.0


def cost(eta: dict | None, started: float | None, price_per_hour: float | None, now: float):
    """(spent so far, at the estimated end) in the price's currency; None without a price."""
    if not price_per_hour or started is None:
        return None
    spent = (now - started) / 3600 * price_per_hour
    at_end = spent + ((eta or {}).get("left_s") or 0.0) / 3600 * price_per_hour
    return round(spent, 2), round(at_end, 2)


def line(eta: dict | None, money: tuple[float, float] | None = None) -> str:
    """`ETA 3m10s (2m40s-4m05s)` and, with a price, `$0.42 so far, $0.61 at the end`."""
    if eta is None:
        return "ETA after the first trial"
    out = f"ETA {_clock(eta['left_s'])} ({_clock(eta['left_s_p10'])}-{_clock(eta['left_s_p90'])})"
    if money:
        out += f", ${money[0]:.2f} so far, ${money[1]:.2f} at the end"
    return out


def _clock(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def from_log(text: str) -> Eta:
    """The estimate's records, read from a job's whole log (`job status`)."""
    import json

    est = Eta()
    for ln in text.splitlines():
        if ln.startswith(MARKER):
            est.add(json.loads(ln[len(MARKER) :]))
    return est
