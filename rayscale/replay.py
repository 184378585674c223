"""The replay of a search: how long Tune's scheduling of these trials takes on N slots.

Each measured run keeps its trials' timeline (rayscale.study.measure: `timeline`): when
each trial started and ended in the search window, on which process, and its metric and
time at each of ASHA's rungs. From it this module takes each trial's cost, the start-up of
a trial process (paid once per slot with `reuse_actors=True`), the gap between trials on
one process and the tail, and replays Tune's scheduling on slots: trials in the order the
job started them, each to the slot that frees first. FIFO runs each trial to its end. ASHA
applies Tune's rule (`_Bracket.on_result`) at each rung, in the order the results would
reach the driver. Host: how trials at once on one machine slow each other. rayscale.predict
reads a study's points into these and prices searches of another size (the model's whole
account is in its docstring).
"""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Protocol


class Configs(Protocol):
    """A search's configs, priced (rayscale.predict.Search): its trials for one draw."""

    def trials(self, rng: random.Random, asha: Asha | None, factor: float) -> list[Trial]: ...


@dataclass(frozen=True)
class Trial:
    """One measured trial: its cost and its (rounds, metric, s from its start) notes."""

    cost: float
    total: int = 0  # the rounds its config asks for
    marks: tuple[tuple[int, float, float], ...] = ()
    draw: int | None = None  # its config's place in the search's drawn order
    rounds: int = 0  # the rounds it trained (fewer than total where ASHA stopped it)
    config: dict | None = field(default=None, compare=False)  # where the record kept it

    def scaled(self, factor: float) -> Trial:
        return replace(
            self, cost=self.cost * factor, marks=tuple((r, m, t * factor) for r, m, t in self.marks)
        )


@dataclass(frozen=True)
class Driver:
    """Tune's driver, one process that starts every trial and takes every result in turn:
    its CPU seconds per such event, and the cores it uses with none (its own loop)."""

    per_event: float = 0.0
    idle: float = 0.0
    events_per_trial: float = 0.0

    @property
    def capacity(self) -> float | None:
        """Events per second with its process on one full core."""
        return (1 - self.idle) / self.per_event if self.per_event > 0 else None

    def floor(self, trials: int) -> float:
        """The shortest search window the driver allows: its events at its capacity."""
        cap = self.capacity
        return trials * self.events_per_trial / cap if cap else 0.0


def driver_of(points: list[dict]) -> Driver:
    """The driver's cost from the runs that measured its process (`driver`: events, their
    rate, its CPU cores in the search window): its cores against the event rate by least
    squares where the rates differ (slope: CPU per event, intercept: its idle loop), else
    the lowest CPU per event of any run (idle counted in: the cautious side). No run
    measured it: no ceiling."""
    runs = [
        r["driver"]
        for p in points
        for r in p.get("runs", [])
        if (r.get("driver") or {}).get("cpu_cores") is not None and r["driver"]["events"]
    ]
    if not runs:
        return Driver()
    per_trial = statistics.median(
        d["events"] / max(1, r["trials"])
        for p in points
        for r in p.get("runs", [])
        if (d := r.get("driver")) and r.get("trials")
    )
    rates = [d["events_per_s"] for d in runs]
    if len(runs) >= 3 and max(rates) >= 2 * min(rates):
        slope, idle = _line([(d["events_per_s"], d["cpu_cores"]) for d in runs])
        if slope > 0 and 0 <= idle < 0.9:
            return Driver(slope, idle, per_trial)
    return Driver(min(d["cpu_s_per_event"] for d in runs), 0.0, per_trial)


def _line(xy: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    mx = statistics.fmean(x for x, _ in xy)
    my = statistics.fmean(y for _, y in xy)
    sxx = sum((x - mx) ** 2 for x, _ in xy)
    slope = sum((x - mx) * (y - my) for x, y in xy) / sxx if sxx else 0.0
    return slope, my - slope * mx


@dataclass(frozen=True)
class Costs:
    """What one measured run says about the search, in seconds."""

    trials: tuple[Trial, ...]  # in the order the job started them
    startup: float  # search start -> first trial on a fresh process
    gap: float  # between two trials on one process
    tail: float  # last trial's end -> search end
    fixed: float  # the job outside the search window (submit, data, baseline, retrain)
    driver: Driver = Driver()
    # Each trial process started before it on the same machine delays its first trial by
    # this much: processes start up (Python, Ray's worker, the trainable's imports) on
    # that machine's cores. `startup` is then the first process's.
    per_proc: float = 0.0

    def starts(self, slots: int, hosts: int = 1) -> list[float]:
        """When each slot's first trial can start: slots spread over HOSTS machines in turn,
        each after the processes ahead of it on its own machine."""
        return [self.startup + self.per_proc * (j // max(1, hosts)) for j in range(slots)]

    def scaled(self, factor: float) -> Costs:
        """Trials `factor` times as long (start-up, gaps and the job's fixed part unchanged)."""
        return replace(self, trials=tuple(t.scaled(factor) for t in self.trials))


@dataclass(frozen=True)
class Asha:
    """Tune's ASHAScheduler as the job makes it (time_attr rounds, one bracket)."""

    grace: int
    rf: int
    max_t: int
    mode: str = "min"  # the metric's, as Tune's scheduler is told it

    def rungs(self) -> list[int]:
        out, r = [], self.grace
        while r < self.max_t:
            out.append(r)
            r *= self.rf
        return out


def costs_of(run: dict) -> Costs:
    """A run of the study (its `timeline` and figures) as costs."""
    tl = sorted(run["timeline"], key=lambda t: t["start"])  # stable: ties keep trial order
    if not tl:
        raise ValueError("the run has no trials")
    lanes = _lanes(tl)
    firsts = [ts[0]["start"] for ts in lanes]
    gaps = [b["start"] - a["end"] for ts in lanes for a, b in zip(ts, ts[1:], strict=False)]
    return Costs(
        trials=tuple(
            Trial(
                t["end"] - t["start"],
                int(t.get("total_rounds") or t.get("rounds") or 0),
                tuple((int(r), float(m), float(s)) for r, m, s in t.get("marks") or ()),
                t.get("draw"),
                int(t.get("rounds") or 0),
                t.get("config"),
            )
            for t in tl
        ),
        startup=statistics.median(firsts),
        gap=statistics.median(gaps) if gaps else 0.0,
        tail=max(0.0, run["wall_s"] - max(t["end"] for t in tl)),
        fixed=max(0.0, (run.get("job_total_s") or run["wall_s"]) - run["wall_s"]),
    )


# Trial starts read from Tune's whole-second rows are known to a few tenths of a second.
LANE_SLACK = 0.5


def _lanes(tl: list[dict]) -> list[list[dict]]:
    """The trials (by start) in the sequences one slot ran them: by process where processes
    ran several trials (reuse_actors); where each trial had a process of its own, rebuilt
    from the times, each trial after the trial that ended last before it started."""
    by_proc: dict = {}
    for t in tl:
        by_proc.setdefault(t["proc"], []).append(t)
    if len(by_proc) < len(tl):
        return list(by_proc.values())
    lanes: list[list[dict]] = []
    for t in tl:
        free = [lane for lane in lanes if lane[-1]["end"] <= t["start"] + LANE_SLACK]
        if free:
            max(free, key=lambda lane: lane[-1]["end"]).append(t)
        else:
            lanes.append([t])
    return lanes


def _slots(slots: int, n: int, startup) -> list:
    """Each slot's (first free time, index, fresh); STARTUP: one time for all, or each's."""
    if slots < 1:
        raise ValueError("slots must be at least 1")
    at = list(startup) if isinstance(startup, (list, tuple)) else [startup] * slots
    free = [(at[i], i, True) for i in range(min(slots, n))]
    heapq.heapify(free)
    return free


def makespan(costs, slots: int, startup, gap: float) -> float:
    """FIFO list scheduling: each trial's cost, in order, to the slot that frees first."""
    free = _slots(slots, len(costs), startup)
    end = min(at for at, _, _ in free)
    for cost in costs:
        at, i, fresh = heapq.heappop(free)
        finish = at + (0.0 if fresh else gap) + cost
        end = max(end, finish)
        heapq.heappush(free, (finish, i, False))
    return end


def cutoff(recorded: dict, rf: int) -> float | None:
    """Tune's `_Bracket.cutoff`: numpy's nanpercentile at (1 - 1/rf), linear interpolation."""
    vals = sorted(v for v in recorded.values() if v == v)
    if not vals:
        return None
    k = (len(vals) - 1) * (1 - 1 / rf)
    lo = int(k)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def on_result(rungs: list[tuple[int, dict]], trial, rounds: int, reward: float, rf: int) -> bool:
    """Tune's `_Bracket.on_result` (stop_last_trials=True): True to stop the trial.
    `rungs` descending, each (milestone, {trial: reward recorded there})."""
    for milestone, recorded in rungs:
        if rounds < milestone or trial in recorded:
            continue
        cut = cutoff(recorded, rf)
        recorded[trial] = reward
        return cut is not None and reward < cut
    return False


def path(t: Trial, asha: Asha) -> list[tuple[int, float, float]]:
    """The trial's results at its rungs and its end, as the replay sees them. Past the last
    note of a trial the measured run stopped: its last rate per round, its last metric value."""
    if not t.marks:
        raise ValueError("the trial has no rung notes")
    total = t.total or t.marks[-1][0]
    known = {r: (r, m, s) for r, m, s in t.marks}
    last = t.marks[-1]
    prev = t.marks[-2] if len(t.marks) > 1 else (0, last[1], 0.0)
    rate = (last[2] - prev[2]) / max(1, last[0] - prev[0])
    out = []
    for r in [*(r for r in asha.rungs() if r < total), total]:
        out.append(known.get(r) or (r, last[1], last[2] + (r - last[0]) * rate))
    if out[-1][0] == last[0] == total:
        out[-1] = (total, last[1], max(t.cost, last[2]))  # its end as the timeline has it
    return out


def asha_makespan(
    trials: list[Trial] | tuple[Trial, ...], slots: int, startup, gap: float, asha: Asha
) -> tuple[float, dict[int, int]]:
    """ASHA on SLOTS slots: (the search's end, {trial index: rounds where it was stopped})."""
    paths = [path(t, asha) for t in trials]
    rungs: list[tuple[int, dict]] = [(m, {}) for m in reversed(asha.rungs())]
    waiting = deque(range(len(trials)))
    events: list = []
    seq = itertools.count()

    def take(slot: int, at: float, fresh: bool) -> None:
        if waiting:
            i = waiting.popleft()
            t0 = at + (0.0 if fresh else gap)
            heapq.heappush(events, (t0 + paths[i][0][2], next(seq), slot, i, 0, t0))

    first = sorted(_slots(slots, len(trials), startup))
    for at, slot, fresh in first:
        take(slot, at, fresh)
    end, stopped = first[0][0], {}
    while events:
        now, _, slot, i, k, t0 = heapq.heappop(events)
        rounds, value, _ = paths[i][k]
        last = k == len(paths[i]) - 1
        # Tune stops a trial at max_t before the bracket sees it; its rungs keep the highest
        # rewards, the metric's negative where less is better.
        reward = -value if asha.mode == "min" else value
        stop = rounds >= asha.max_t or on_result(rungs, i, rounds, reward, asha.rf)
        if stop or last:
            if not last:
                stopped[i] = rounds
            end = max(end, now)
            take(slot, now, False)
        else:
            heapq.heappush(events, (t0 + paths[i][k + 1][2], next(seq), slot, i, k + 1, t0))
    return end, stopped


def drawn_order(trials) -> list[Trial]:
    """The job's ASHA order (configs as drawn), where the trials know it; a FIFO job runs
    them longest first, which would let every expensive trial past the rungs."""
    if all(t.draw is not None for t in trials):
        return sorted(trials, key=lambda t: t.draw)
    return list(trials)


def bounds(c: Costs, slots: int, asha: Asha | None = None, hosts: int = 1) -> tuple[float, float]:
    """The search window as the trials' schedule sets it (SLOTS over HOSTS machines), and
    as the driver's throughput does (its events one after another); the search takes the
    longer."""
    starts = c.starts(slots, hosts)
    if asha:
        trials = asha_makespan(drawn_order(c.trials), slots, starts, c.gap, asha)[0]
    else:
        trials = makespan([t.cost for t in c.trials], slots, starts, c.gap)
    return trials, c.startup + c.driver.floor(len(c.trials))


def search_wall(c: Costs, slots: int, asha: Asha | None = None, hosts: int = 1) -> float:
    return max(bounds(c, slots, asha, hosts)) + c.tail


def predict(
    c: Costs,
    slots: int,
    num_samples: int | None = None,
    asha: Asha | None = None,
    draws: int = 200,
    seed: int = 0,
    search: Configs | None = None,
    factor: float = 1.0,
    hosts: int = 1,
) -> dict:
    """Search wall and job total on SLOTS slots; p10 / p90 where trials are drawn. SEARCH:
    the configs of a search of another size, priced by its cost model times FACTOR."""
    driver = c.startup + c.driver.floor(num_samples or len(c.trials)) + c.tail
    if not num_samples or num_samples == len(c.trials):
        wall = search_wall(c, slots, asha, hosts)
        return {
            "wall_s": wall,
            "wall_s_p10": wall,
            "wall_s_p90": wall,
            "total_s": wall + c.fixed,
            "driver_floor_s": driver,
        }
    rng = random.Random(seed)
    walls = []
    for _ in range(draws):
        if search:
            drawn = search.trials(rng, asha, factor)
        else:
            drawn = rng.choices(c.trials, k=num_samples)
            if asha:  # in the order drawn, as the job runs an ASHA search's configs
                drawn = [replace(t, draw=i) for i, t in enumerate(drawn)]
            else:  # longest first, as the job orders a FIFO search's configs
                drawn.sort(key=lambda t: t.cost, reverse=True)
        walls.append(search_wall(replace(c, trials=tuple(drawn)), slots, asha, hosts))
    walls.sort()
    wall = statistics.median(walls)
    return {
        "wall_s": wall,
        "wall_s_p10": walls[len(walls) // 10],
        "wall_s_p90": walls[(len(walls) * 9) // 10],
        "total_s": wall + c.fixed,
        "driver_floor_s": driver,
    }


@dataclass(frozen=True)
class Host:
    """How trials at once on one machine slow each other: {trials at once: factor}."""

    factors: tuple[tuple[int, float], ...] = ((1, 1.0),)
    one_host: bool = False  # the study's workers all shared the machine
    cpus: int = 0  # that machine's CPUs
    from_points: bool = False  # factors read from the study's own points, not baselines
    cpu_share: float = 1.0  # the cores a trial keeps busy alone (1: it computes throughout)

    def factor(self, k: float) -> float:
        pts = sorted(self.factors)
        if k <= pts[0][0]:
            return pts[0][1]
        for (k0, f0), (k1, f1) in zip(pts, pts[1:], strict=False):
            if k <= k1:
                return f0 + (f1 - f0) * (k - k0) / (k1 - k0)
        return pts[-1][1]

    def slowdown(self, slots: int, slots_per_worker: int) -> float:
        """A trial's time over its time alone on a machine, with SLOTS trials in the search:
        all of them on the study's one machine, else one worker's. More trials than cores
        share them in turn on top."""
        k = slots if self.one_host else slots_per_worker
        busy = k * self.cpu_share  # the cores the trials at once would keep busy
        over = busy / self.cpus if self.one_host and self.cpus and busy > self.cpus else 1.0
        return self.factor(min(k, self.cpus) if k > self.cpus else k) * over
