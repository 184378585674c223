"""A replay model of the search: how long it takes on N workers, from a study's own records.

Each measured run keeps its trials' timeline (rayscale.scaling: `timeline`): when each
trial started and ended in the search window, and on which process. From it the model
takes:

- each trial's cost (end - start: training, its reports, its checkpoint writes);
- the start-up of a trial process (search start -> the first trial on a process), paid
  once per slot with `reuse_actors=True`;
- the gap between trials on one process, and the tail (last trial's end -> search end).

It then replays Tune's FIFO scheduling on N workers x (CPUs per worker / CPUs per trial)
slots: trials in the order the job started them, each to the slot that frees first.
ASHA's early stopping is not modelled (its decisions need each trial's metric at each
rung): a study run with ASHA is refused.

Searches larger than the one measured draw their trials' costs, with replacement, from the
measured ones; the spread over draws is reported (p10-p90). A trial's cost is taken from
the measured point nearest in workers (the same contention, on one machine), scaled by
`speed` (>1: faster cores than the study's; an assumption the caller states).
"""

from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Costs:
    """What one measured run says about the search, in seconds."""

    trials: tuple[float, ...]  # each trial's cost, in the order the job started them
    startup: float  # search start -> first trial on a fresh process
    gap: float  # between two trials on one process
    tail: float  # last trial's end -> search end
    fixed: float  # the job outside the search window (submit, data, baseline, retrain)

    def scaled(self, speed: float) -> Costs:
        return Costs(
            tuple(t / speed for t in self.trials), self.startup, self.gap, self.tail, self.fixed
        )


def costs_of(run: dict) -> Costs:
    """A run of the study (its `timeline` and figures) as costs."""
    tl = sorted(run["timeline"], key=lambda t: t["start"])  # stable: ties keep trial order
    if not tl:
        raise ValueError("the run has no trials")
    by_proc: dict = {}
    for t in tl:
        by_proc.setdefault(t["proc"], []).append(t)
    firsts = [ts[0]["start"] for ts in by_proc.values()]
    gaps = [
        b["start"] - a["end"] for ts in by_proc.values() for a, b in zip(ts, ts[1:], strict=False)
    ]
    return Costs(
        trials=tuple(t["end"] - t["start"] for t in tl),
        startup=statistics.median(firsts),
        gap=statistics.median(gaps) if gaps else 0.0,
        tail=max(0.0, run["wall_s"] - max(t["end"] for t in tl)),
        fixed=max(0.0, (run.get("job_total_s") or run["wall_s"]) - run["wall_s"]),
    )


def makespan(
    trials: list[float] | tuple[float, ...], slots: int, startup: float, gap: float
) -> float:
    """FIFO list scheduling: each trial, in order, to the slot that frees first."""
    if slots < 1:
        raise ValueError("slots must be at least 1")
    free = [(startup, i, True) for i in range(min(slots, len(trials)))]
    heapq.heapify(free)
    end = startup
    for cost in trials:
        at, i, fresh = heapq.heappop(free)
        finish = at + (0.0 if fresh else gap) + cost
        end = max(end, finish)
        heapq.heappush(free, (finish, i, False))
    return end


def search_wall(c: Costs, slots: int) -> float:
    return makespan(c.trials, slots, c.startup, c.gap) + c.tail


def predict(
    c: Costs, slots: int, num_samples: int | None = None, draws: int = 200, seed: int = 0
) -> dict:
    """Search wall and job total on SLOTS slots; p10 / p90 where trials are drawn."""
    if not num_samples or num_samples == len(c.trials):
        wall = search_wall(c, slots)
        return {"wall_s": wall, "wall_s_p10": wall, "wall_s_p90": wall, "total_s": wall + c.fixed}
    rng = random.Random(seed)
    # Longest first, as the job orders a FIFO search's configs.
    walls = sorted(
        makespan(
            sorted(rng.choices(c.trials, k=num_samples), reverse=True), slots, c.startup, c.gap
        )
        + c.tail
        for _ in range(draws)
    )
    wall = statistics.median(walls)
    return {
        "wall_s": wall,
        "wall_s_p10": walls[len(walls) // 10],
        "wall_s_p90": walls[(len(walls) * 9) // 10],
        "total_s": wall + c.fixed,
    }


def nearest(points: list[dict], workers: int) -> dict:
    return min(points, key=lambda p: (abs(p["workers"] - workers), -p["workers"]))


def point_costs(point: dict) -> Costs:
    """The median run of a point (by wall time) as its costs."""
    runs = sorted((r for r in point["runs"] if r.get("timeline")), key=lambda r: r["wall_s"])
    if not runs:
        raise ValueError(f"the {point['workers']}-worker point has no trial timeline")
    return costs_of(runs[len(runs) // 2])


def slots_of(point: dict, workers: int, cpus_per_worker: float | None = None) -> int:
    per_trial = point.get("cpus_per_trial") or 1
    per_worker = cpus_per_worker or point["cpus"] / point["workers"]
    return max(1, int(workers * per_worker // per_trial))


def validation(points: list[dict]) -> list[dict]:
    """Each measured point predicted from the others' trial costs (leave one out)."""
    out = []
    for p in points:
        others = [q for q in points if q is not p and any(r.get("timeline") for r in q["runs"])]
        if not others:
            continue
        c = point_costs(nearest(others, p["workers"]))
        predicted = search_wall(c, slots_of(p, p["workers"]))
        measured = p["wall_s_median"]
        out.append(
            {
                "workers": p["workers"],
                "measured_wall_s": round(measured, 2),
                "predicted_wall_s": round(predicted, 2),
                "error": round((predicted - measured) / measured, 4),
            }
        )
    return out


def at(
    points: list[dict],
    workers: int,
    cpus_per_worker: float | None = None,
    num_samples: int | None = None,
    speed: float = 1.0,
) -> dict:
    """The prediction for WORKERS, from the measured point nearest in workers."""
    src = nearest(points, workers)
    c = point_costs(src).scaled(speed)
    return predict(c, slots_of(src, workers, cpus_per_worker), num_samples)


def curve(points: list[dict], workers: list[int], base_wall: float) -> list[dict]:
    """Predicted points (speedup against the study's base point's measured wall)."""
    base_n = points[0]["workers"]
    out = []
    for n in workers:
        wall = at(points, n)["wall_s"]
        speedup = base_n * base_wall / wall
        out.append(
            {
                "workers": n,
                "wall_s": round(wall, 2),
                "speedup": round(speedup, 3),
                "efficiency": round(speedup / n, 3),
            }
        )
    return out


def scheduler_of(job_args: list[str]) -> str | None:
    for i, a in enumerate(job_args):
        if a == "--scheduler" and i + 1 < len(job_args):
            return job_args[i + 1]
        if a.startswith("--scheduler="):
            return a.split("=", 1)[1]
    return None


def study_prediction(points: list[dict], job_args: list[str]) -> dict | None:
    """The study.json `prediction` block; None for ASHA or where runs carry no timeline."""
    if scheduler_of(job_args) == "asha" or not any(
        r.get("timeline") for p in points for r in p["runs"]
    ):
        return None
    return {
        "method": "replay",
        "validation": validation(points),
        "points": curve(points, [1, 2, 4, 8, 16, 32, 64], points[0]["wall_s_median"]),
    }
