"""A study's points read for the replay model: how long the search takes on N workers, from
the study's own records (rayscale.replay replays the scheduling).

Each measured run keeps its trials' timeline (rayscale.study.measure: `timeline`): when each
trial started and ended in the search window, on which process, and its validation RMSE
and time at each of ASHA's rungs (noted by every trial, whatever the scheduler). From it
the model takes:

- each trial's cost (end - start: training, its reports, its checkpoint writes);
- the start-up of a trial process (search start -> the first trial on a process), paid
  once per slot with `reuse_actors=True`;
- the gap between trials on one process, and the tail (last trial's end -> search end).

It then replays Tune's scheduling on N workers x (CPUs per worker / CPUs per trial) slots:
trials in the order the job started them, each to the slot that frees first. FIFO runs
each trial to its end. ASHA applies Tune's rule (`_Bracket.on_result`) at each rung, in
the order the results would reach the driver: a trial goes on only if its RMSE is in the
best 1/rf of those recorded at that rung so far. A trial that the measured run stopped but
the replay lets go on is extrapolated: its last rate per round, its last RMSE.

Host contention: trials that run at once on one machine slow each other down (cores share
caches and memory bandwidth). The study's baselines measure it on the study's host without
Ray: the plain loop (one trial at a time) against joblib (n_jobs at once) on the same
configs, run in turns as often as each point (the median of the pairs' ratios). Costs are
normalised to one trial per host and scaled to the target's count of trials per host;
beyond the counts measured the last factor holds (an assumption).

Searches of another size run the configs the job itself would draw (`--print-configs`),
each priced by a cost model fitted on the measured trials (`fit_costs`: log cost against
log rounds, max_depth and the logs of subsample, colsample_bytree, min_child_weight and
learning_rate, by least squares). Each draw refits it on the measured configs drawn with
replacement and multiplies each trial by a residual drawn at random; the spread over
draws is reported (p10-p90). Under
ASHA a config not measured takes its RMSE at each rung from the measured config nearest
to it (an assumption: configs alike converge alike). Where the configs are not known (an
adaptive search, an old study) trials are drawn with replacement from the measured ones.
Costs are those of the measured point nearest in workers, scaled by `speed` (>1: faster
cores than the study's; an assumption the caller states).
"""

from __future__ import annotations

import functools
import json
import math
import random
import statistics
from dataclasses import dataclass, replace

from rayscale.jobs import flag_value
from rayscale.replay import (
    Asha,
    Costs,
    Driver,
    Host,
    Trial,
    _lanes,
    _line,
    costs_of,
    driver_of,
    predict,
    search_wall,
)

# Providers whose workers all run on the machine that ran the study.
ONE_HOST = {"local", "docker", "kind"}
CURVE_WORKERS = [1, 2, 4, 8, 16, 32, 64]


# ---- trial costs of configs not measured ---------------------------------------------------

TERMS = (
    "intercept",
    "log rounds",
    "max_depth",
    "log subsample",
    "log colsample_bytree",
    "log min_child_weight",
    "log learning_rate",
)
WORK_TERMS = 5  # the intercept and the work per round: rounds, depth, rows and columns sampled
MIN_CONFIGS = 10  # distinct measured configs a fit of the seven terms needs, with some to spare


def features(cfg: dict, rounds: float) -> list[float]:
    """The cost model's terms (XGBoost's defaults where a config leaves one out). Per round
    XGBoost's work grows with the leaves (2^depth) and with the fractions of rows and
    columns it samples; min_child_weight and the learning rate decide how many of the
    leaves a tree can split (the study's `cost_model.work_terms_only` is the error
    without them); the per-trial set-up (its DMatrix) makes cost grow slower than rounds,
    which the fitted exponent of rounds takes up."""
    return [
        1.0,
        math.log(max(1.0, rounds)),
        float(cfg.get("max_depth", 6)),
        math.log(float(cfg.get("subsample", 1.0))),
        math.log(float(cfg.get("colsample_bytree", 1.0))),
        math.log(float(cfg.get("min_child_weight", 1.0))),
        math.log(float(cfg.get("learning_rate", 0.3))),
    ]


@dataclass(frozen=True)
class CostModel:
    coef: tuple[float, ...]  # one per TERMS
    residuals: tuple[float, ...]  # log(measured / fitted), one per measured trial

    def cost(self, cfg: dict, rounds: float) -> float:
        x = features(cfg, rounds)[: len(self.coef)]
        return math.exp(sum(b * v for b, v in zip(self.coef, x, strict=True)))


def _key(cfg: dict) -> str:
    """A config as a dict key, whatever JSON it holds (lists, nested dicts, None)."""
    return json.dumps(cfg, sort_keys=True, default=str)


def fit_costs(
    rows: list[tuple[dict, int, float]], min_configs: int = MIN_CONFIGS, terms: int = len(TERMS)
) -> CostModel | None:
    """Least squares of log cost on the first TERMS terms, over (config, rounds trained,
    cost) rows; None where fewer than MIN_CONFIGS distinct configs were measured. A term
    that does not vary among them (the space fixes it) is left out: the data say nothing
    of it."""
    import numpy as np

    rows = [r for r in rows if r[2] > 0]
    if len({_key(c) for c, _, _ in rows}) < min_configs:
        return None
    x = np.array([features(c, r)[:terms] for c, r, _ in rows])
    y = np.log([t for _, _, t in rows])
    keep = [0] + [j for j in range(1, x.shape[1]) if np.ptp(x[:, j]) > 1e-12]
    coef = np.zeros(x.shape[1])
    coef[keep] = np.linalg.lstsq(x[:, keep], y, rcond=None)[0]
    return CostModel(tuple(float(b) for b in coef), tuple(float(v) for v in y - x @ coef))


def _config_of(t: Trial, drawn: list[dict] | None) -> dict | None:
    """A measured trial's config: from its record, else from the configs the job draws."""
    if t.config is None and drawn is not None and t.draw is not None and t.draw < len(drawn):
        return drawn[t.draw]
    return t.config


def _measured(points: list[dict], host: Host):
    """Every measured trial, normalised to one trial per machine."""
    return (t for p in points for c in run_costs(p, host) for t in c.trials)


def cost_rows(points: list[dict], host: Host, drawn: list[dict] | None = None) -> list:
    """(config, rounds trained, cost) of every measured trial whose config is known."""
    return [
        (cfg, t.rounds or t.total, t.cost)
        for t in _measured(points, host)
        if (cfg := _config_of(t, drawn)) is not None
    ]


def loo_errors(rows: list[tuple[dict, int, float]], terms: int = len(TERMS)) -> list[float]:
    """|predicted / measured - 1| of each trial, priced by a fit without its config."""
    errors = []
    for key in {_key(c) for c, _, _ in rows}:
        m = fit_costs([r for r in rows if _key(r[0]) != key], terms=terms)
        if m:
            errors += [abs(m.cost(c, n) / t - 1) for c, n, t in rows if _key(c) == key]
    return sorted(errors)


def _median_p90(errors: list[float]) -> tuple[float | None, float | None]:
    if not errors:
        return None, None
    return round(statistics.median(errors), 4), round(errors[(len(errors) * 9) // 10], 4)


def cost_model_check(rows: list[tuple[dict, int, float]]) -> dict | None:
    """The model's terms and its error on each config left out of the fit (leave one config
    out: each of its trials priced by a model that never saw it); beside it the error of
    the work terms alone (rounds, depth, rows and columns sampled), which says whether the
    last two earn their place on these data."""
    model = fit_costs(rows)
    if model is None:
        return None
    median, p90 = _median_p90(loo_errors(rows))
    work_median, work_p90 = _median_p90(loo_errors(rows, terms=WORK_TERMS))
    return {
        "form": "log cost = " + " + ".join(f"b[{t}]" for t in TERMS[1:]) + " + b0",
        "terms": {t: round(b, 4) for t, b in zip(TERMS, model.coef, strict=True)},
        "trials": len(rows),
        "configs": len({_key(c) for c, _, _ in rows}),
        "residual_sd": round(statistics.pstdev(model.residuals), 4),
        "loo_error_median": median,
        "loo_error_p90": p90,
        "work_terms_only": {"loo_error_median": work_median, "loo_error_p90": work_p90},
    }


def _notes_at(notes: tuple[tuple[int, float], ...], rounds: int) -> float:
    below = [m for n, m in notes if n <= rounds]
    return below[-1] if below else notes[0][1]


@dataclass(frozen=True)
class Search:
    """A search's configs in the order the job runs them, the measured rows that price
    them, and for ASHA each one's RMSE notes: its own where measured, else the nearest
    measured config's."""

    configs: tuple[dict, ...]
    rows: tuple[tuple[dict, int, float], ...]
    notes: tuple[tuple[tuple[int, float], ...], ...] = ()

    @functools.cached_property
    def _groups(self) -> list[list[tuple[dict, int, float]]]:
        """The rows by config, once for every draw."""
        by: dict = {}
        for r in self.rows:
            by.setdefault(_key(r[0]), []).append(r)
        return list(by.values())

    def model(self, rng: random.Random) -> CostModel:
        """The cost model refitted on the measured configs drawn with replacement: the
        spread of a prediction then carries how sure the fit is, not only the trials'
        scatter around it."""
        groups = self._groups
        for _ in range(20):
            drawn = [r for g in rng.choices(groups, k=len(groups)) for r in g]
            m = fit_costs(drawn, min_configs=len(TERMS) + 1)
            if m:
                return m
        return fit_costs(list(self.rows))  # type: ignore[return-value]

    def trials(self, rng: random.Random, asha: Asha | None, factor: float) -> list[Trial]:
        out = []
        model = self.model(rng)
        for i, cfg in enumerate(self.configs):
            f = factor * math.exp(rng.choice(model.residuals))
            total = max(1, int(cfg.get("num_boost_round") or 1))
            marks: tuple = ()
            if asha:
                at_rounds = [*(r for r in asha.rungs() if r < total), total]
                marks = tuple(
                    (r, _notes_at(self.notes[i], r), model.cost(cfg, r) * f) for r in at_rounds
                )
            out.append(Trial(model.cost(cfg, total) * f, total, marks, i, total, cfg))
        return out


def _nearest_config(cfg: dict, measured: list[dict], scale: dict) -> int:
    def dist(m: dict) -> float:
        return sum(((float(cfg.get(k, 0)) - float(m.get(k, 0))) / s) ** 2 for k, s in scale.items())

    return min(range(len(measured)), key=lambda j: dist(measured[j]))


def search_of(points: list[dict], host: Host, drawn: dict, num_samples: int) -> Search | None:
    """The first NUM_SAMPLES of the job's drawn configs (`--print-configs`: {configs,
    order}) as a Search; None where the study's trials cannot fit a cost model."""
    configs = drawn["configs"]
    rows = cost_rows(points, host, configs)
    if fit_costs(rows) is None:
        return None
    order = [i for i in drawn["order"] if i < num_samples]  # the job's order of its first N
    # Each measured config once, with the notes of the trial that went furthest.
    seen: dict = {}
    for t in _measured(points, host):
        cfg = _config_of(t, configs)
        if cfg and t.marks and len(t.marks) > len(seen.get(_key(cfg), (None, ()))[1]):
            seen[_key(cfg)] = (cfg, t.marks)
    notes: tuple = ()
    if seen:
        measured = [c for c, _ in seen.values()]
        marks = [m for _, m in seen.values()]
        keys = [k for k, v in measured[0].items() if isinstance(v, (int, float))]
        scale = {k: (statistics.pstdev(float(c.get(k, 0)) for c in measured) or 1.0) for k in keys}
        notes = tuple(
            tuple((r, m) for r, m, _ in marks[_nearest_config(configs[i], measured, scale)])
            for i in order
        )
    return Search(tuple(configs[i] for i in order), tuple(rows), notes)


# ---- a study's points -------------------------------------------------------------------------


def host_of(study: dict) -> Host:
    """The study's host contention: from its baselines (sequential vs joblib, no Ray in
    the way), else, for a study whose workers shared one machine, from its own points."""
    factors = [(1, 1.0)]
    # The baselines, else the short calibration a study runs without them.
    for b in (study.get("baselines") or {}, study.get("calibration") or {}):
        found = joblib_factor(b)
        if found:
            factors.append(found)
            break
    one_host = study.get("one_machine", study.get("provider") in ONE_HOST)
    from_points = len(factors) == 1 and one_host
    if from_points:
        factors += points_contention(replayable(study.get("points") or []))
    return Host(
        tuple(factors),
        one_host,
        int((study.get("machine") or {}).get("cpus") or 0),
        from_points,
        cpu_share(replayable(study.get("points") or [])),
    )


def cpu_share(points: list[dict]) -> float:
    """The cores one trial keeps busy, from the point of fewest slots (its trials the least
    crowded): its worker nodes' busy cores over its slots. Trials that wait (on I/O, a
    remote service, a sleep) crowd a machine's cores less than trials that compute. 1
    where the study could not see its nodes' processes."""
    if not points:
        return 1.0
    p = min(points, key=lambda q: slots_of(q, q["workers"]))
    busy = [
        sum(v for node, v in r["cpu_busy_by_node"].items() if node != "head")
        for r in p["runs"]
        if r.get("cpu_busy_by_node")
    ]
    if not busy:
        return 1.0
    per_trial = p.get("cpus_per_trial") or 1
    return min(per_trial, max(0.01, statistics.median(busy) / slots_of(p, p["workers"])))


def joblib_factor(b: dict) -> tuple[int, float] | None:
    """(n_jobs, joblib's summed training time over the loop's) from a study's baselines."""
    seq, par = b.get("sequential") or {}, b.get("joblib") or {}
    n = par.get("n_jobs") or 0
    pairs = list(zip(seq.get("runs") or (), par.get("runs") or (), strict=False))
    if n > 1 and pairs and all(a["sum_train_s"] and b["sum_train_s"] for a, b in pairs):
        # Each joblib run against the loop's run beside it: the machine's drift between
        # pairs cancels out, which a ratio of medians over the whole study does not.
        return n, statistics.median(b["sum_train_s"] / a["sum_train_s"] for a, b in pairs)
    if n > 1 and seq.get("sum_train_s") and par.get("sum_train_s"):  # one run each
        return n, par["sum_train_s"] / seq["sum_train_s"]
    return None


def _trial_key(t: dict):
    if t.get("draw") is not None:
        return t["draw"]
    return _key(t["config"]) if isinstance(t.get("config"), dict) else None


def points_contention(points: list[dict]) -> list[tuple[int, float]]:
    """Trials at once on the one machine of a study that ran them there at 1 and more at
    once: each count's trials against the same configs' at 1 (the median ratio)."""
    by_k: dict[int, dict] = {}
    for p in points:
        costs: dict = {}
        for r in p["runs"]:
            for t in r.get("timeline") or ():
                if (key := _trial_key(t)) is not None:
                    costs.setdefault(key, []).append(t["end"] - t["start"])
        k = slots_of(p, p["workers"])
        by_k.setdefault(k, {}).update({key: statistics.median(v) for key, v in costs.items()})
    base = by_k.get(1) or {}
    out = []
    for k in sorted(by_k):
        ratios = [c / base[key] for key, c in by_k[k].items() if base.get(key, 0) > 0]
        if k > 1 and ratios:
            out.append((k, statistics.median(ratios)))
    return out


def replayable(points: list[dict]) -> list[dict]:
    """The points with at least one run whose trials' timeline was kept."""
    return [p for p in points if any(r.get("timeline") for r in p.get("runs", []))]


def nearest(points: list[dict], workers: int) -> dict:
    return min(points, key=lambda p: (abs(p["workers"] - workers), -p["workers"]))


def slots_of(point: dict, workers: int, cpus_per_worker: float | None = None) -> int:
    per_trial = point.get("cpus_per_trial") or 1
    per_w = cpus_per_worker or point["cpus"] / point["workers"]
    return max(1, int(workers * per_w // per_trial))


def run_costs(point: dict, host: Host = Host()) -> list[Costs]:
    """A point's runs, normalised to one trial per machine, fastest trials first."""
    f = host.slowdown(slots_of(point, point["workers"]), slots_of(point, 1))
    runs = [costs_of(r).scaled(1 / f) for r in point["runs"] if r.get("timeline")]
    if not runs:
        raise ValueError(f"the {point['workers']}-worker point has no trial timeline")
    return sorted(runs, key=lambda c: sum(t.cost for t in c.trials))


def point_costs(points: list[dict], workers: int, host: Host = Host()) -> Costs:
    """The trials of the median run over all the points (normalised, so the machine's drift
    between runs, not the point, picks it), with the start-up, gaps and fixed part of the
    point nearest in workers."""
    runs = [c for p in points for c in run_costs(p, host)]
    runs.sort(key=lambda c: sum(t.cost for t in c.trials))
    near = run_costs(nearest(points, workers), host)
    startup, per_proc = startup_of(points, host)
    return replace(
        near[len(near) // 2],
        trials=runs[len(runs) // 2].trials,
        driver=driver_of(points),
        startup=startup,
        per_proc=per_proc,
    )


def startup_of(points: list[dict], host: Host = Host()) -> tuple[float, float]:
    """The first trial process's start-up and what each process ahead of it on its machine
    adds, by least squares over every run's first trials, each at its place on its machine
    (on a study of one machine, its place among all; of separate machines, among one
    machine's, slots spread over them in turn). One place only: its median, nothing added."""
    xy = []
    for p in points:
        hosts = 1 if host.one_host else p["workers"]
        for r in p["runs"]:
            if r.get("timeline"):
                firsts = sorted(
                    lane[0]["start"]
                    for lane in _lanes(sorted(r["timeline"], key=lambda t: t["start"]))
                )
                xy += [(j // hosts, s) for j, s in enumerate(firsts)]
    if len({x for x, _ in xy}) < 2:
        return statistics.median(y for _, y in xy), 0.0
    slope, first = _line(xy)
    return max(0.0, first), max(0.0, slope)


def at(
    points: list[dict],
    workers: int,
    cpus_per_worker: float | None = None,
    num_samples: int | None = None,
    speed: float = 1.0,
    asha: Asha | None = None,
    host: Host = Host(),
    search: Search | None = None,
    driver: Driver | None = None,
    workers_per_node: int = 1,
) -> dict:
    """The prediction for WORKERS workers, WORKERS_PER_NODE to a machine (1: each its own),
    from the measured point nearest in workers; SEARCH prices a search of another size;
    DRIVER, where the study measured none. Workers that share a machine slow each other's
    trials by the study's host contention at that many trials at once."""
    src = nearest(points, workers)
    on_a_node = slots_of(src, 1, cpus_per_worker) * max(1, min(workers_per_node, workers))
    factor = host.factor(on_a_node) / speed
    c = point_costs(points, workers, host).scaled(factor)
    if driver is not None:
        c = replace(c, driver=driver)
    if host.one_host and host.cpus and cpus_per_worker:
        # Processes start on a machine's cores: more cores, more start side by side.
        c = replace(c, per_proc=c.per_proc * host.cpus / cpus_per_worker)
    slots = slots_of(src, workers, cpus_per_worker)
    return predict(c, slots, num_samples, asha, search=search, factor=factor, hosts=workers)


def replay_at(points: list[dict], shape: dict, asha: Asha | None = None, host: Host = Host()):
    """The search wall, from POINTS' trials, on the machines of a measured point SHAPE."""
    slots = slots_of(shape, shape["workers"])
    c = point_costs(points, shape["workers"], host)
    hosts = 1 if host.one_host else shape["workers"]
    return search_wall(c.scaled(host.slowdown(slots, slots_of(shape, 1))), slots, asha, hosts)


def validation(points: list[dict], asha: Asha | None = None, host: Host = Host()) -> list[dict]:
    """Each measured point predicted from the others' trials (leave one out), on the
    study's own machines."""
    out = []
    for p in points:
        others = [q for q in replayable(points) if q is not p]
        if not others:
            continue
        h = host
        if host.from_points:  # the point left out must not have priced its own trials
            h = replace(host, factors=((1, 1.0), *points_contention(others)))
        predicted = replay_at(others, p, asha, h)
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


def curve(
    points: list[dict], workers: list[int], asha: Asha | None = None, host: Host = Host()
) -> list[dict]:
    """Predicted points on separate worker machines of the study's size (speedup against
    the model's own wall at the study's base point, so the curve is one model's)."""
    base_n = points[0]["workers"]
    base_wall = at(points, base_n, asha=asha, host=host)["wall_s"]
    out = []
    for n in workers:
        wall = at(points, n, asha=asha, host=host)["wall_s"]
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
    return flag_value(job_args, "--scheduler")


def asha_of(job_args: list[str]) -> Asha:
    """The ASHA the job would run with these arguments (its defaults where not given)."""
    max_t = int(flag_value(job_args, "--max-rounds") or 300)
    grace = int(flag_value(job_args, "--grace-rounds") or max(1, max_t // 4))
    return Asha(grace, int(flag_value(job_args, "--reduction-factor") or 3), max_t)


def has_marks(points: list[dict]) -> bool:
    runs = [r for p in points for r in p.get("runs", []) if r.get("timeline")]
    return bool(runs) and all(t.get("marks") for r in runs for t in r["timeline"])


def study_prediction(points: list[dict], job_args: list[str], host: Host = Host()) -> dict | None:
    """The study.json `prediction` block; None where runs carry no timeline, or for ASHA
    where the trials noted nothing at the rungs (records older than the notes)."""
    if not replayable(points):
        return None
    asha = asha_of(job_args) if scheduler_of(job_args) == "asha" else None
    if asha and not has_marks(points):
        return None
    return {
        "method": "replay",
        "scheduler": "asha" if asha else "fifo",
        "host_contention": [list(f) for f in host.factors],
        "validation": validation(points, asha, host),
        # What prices the trials of a larger search (`rayscale plan --num-samples`).
        "cost_model": cost_model_check(cost_rows(points, host)),
        "points": curve(points, CURVE_WORKERS, asha, host),
    }
