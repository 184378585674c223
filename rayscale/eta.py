"""A running search's time left, from the trials finished so far: `job submit`, `job logs
--follow` and `job status` show it.

Each finished trial's progress record (job/progress.py) carries the trial's time and how
long each trial still running has run. The estimate replays the rest over the slots in use:
a running trial ends at a time drawn from the finished trials that ran longer than it has;
each pending trial takes a finished trial's time, drawn, on the slot that frees first. Over
200 draws the median is the estimate and the 10th and 90th percentiles its spread; with a
price per hour, the money spent so far and at the estimated end. Before the first trial
ends there is nothing to draw from, and no estimate.
"""

from __future__ import annotations

import heapq
import random
import statistics
import time
from dataclasses import dataclass, field

DRAWS = 200
MARKER = "RAYSCALE_PROGRESS "  # the job's progress lines (job/protocol.py)


@dataclass
class Eta:
    """What the progress records so far say of the search's end."""

    started: float | None = None  # the first record's clock less its trial's time
    records: list[dict] = field(default_factory=list)

    def add(self, rec: dict) -> None:
        """One progress record. One without a trial's time (a job from before the estimate,
        the joblib baseline) leaves no estimate; a count that starts again (the job's next
        mode, a resumed search) starts the estimate again."""
        if "trial_s" not in rec or (self.records and rec["done"] <= self.records[-1]["done"]):
            self.records.clear()
            self.started = None
        if "trial_s" not in rec:
            return
        if self.started is None:
            self.started = rec["at"] - rec["trial_s"]
        self.records.append(rec)

    def estimate(self, now: float | None = None, seed: int = 0) -> dict | None:
        """{left_s, left_s_p10, left_s_p90, end_at, done, running, pending}; None before the
        first trial ends."""
        if not self.records:
            return None
        last = self.records[-1]
        costs = [r["trial_s"] for r in self.records]
        running = list(last.get("running_s") or [])
        pending = max(0, last["total"] - last["done"] - len(running))
        slots = max(1, len(running) + (1 if pending else 0))
        rng = random.Random(seed)
        ends = sorted(_replay(costs, running, pending, slots, rng) for _ in range(DRAWS))
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
