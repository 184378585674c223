"""What a study's runs add up to: each point's medians, speedup and efficiency, its
baselines, and the files it writes (study.json, points.csv, scaling.png)."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path


def overhead_per_trial(wall_s: float, cpus: float, sum_train_s: float, trials: int) -> float:
    """What a search spent beyond training, per trial: (wall x CPUs - train time) / trials."""
    return (wall_s * cpus - sum_train_s) / max(1, trials)


def clean_points(points: list[dict]) -> list[dict]:
    """The points with a clean run, each with only its clean runs: what the fit and the
    replay model may read."""
    return [{**p, "runs": clean_runs(p["runs"])} for p in points if not p["disturbed"]]


def clean_runs(runs: list[dict]) -> list[dict]:
    """The runs no retried trial or replaced worker disturbed."""
    return [r for r in runs if not r.get("disturbed_by")]


def baseline_summary(runs: list[dict]) -> dict:
    """A baseline's runs as the study shows it: the medians (the same configs every run, so
    the same best model), and each run's times, in the order they ran."""
    out = {**runs[0]}
    keys = ("wall_s", "sum_train_s", "sum_train_cpu_s")
    for key in keys:
        out[key] = _median_of(runs, key)
    out["runs"] = [{k: r.get(k) for k in keys} for r in runs]
    return out


def _median_of(runs: list[dict], key: str) -> float | None:
    """Median of a field that runs recorded before the field existed lack (--resume)."""
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def best_of(values: list, mode: str | None) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return max(vals) if mode == "max" else min(vals)


def summarise(
    runs: list[dict], mode: str | None = "min", extra: tuple[str, ...] = ()
) -> list[dict]:
    by_n: dict[int, list[dict]] = {}
    for r in runs:
        by_n.setdefault(r["workers"], []).append(r)
    # A point's time comes from its undisturbed runs where it has any; a point with none is
    # marked `disturbed`: its time is not a speedup to read.
    timed = {n: clean_runs(rs) or rs for n, rs in by_n.items()}
    base_n = min(by_n)
    base_wall = statistics.median(r["wall_s"] for r in timed[base_n])
    points = []
    for n in sorted(by_n):
        rs = by_n[n]
        wall = statistics.median(r["wall_s"] for r in timed[n])
        # Relative to the 1-worker point; if 1 was not measured, the smallest point is
        # taken as perfectly efficient (stated in the study as speedup_base).
        speedup = base_n * base_wall / wall
        cpus = rs[0]["cpus"]
        overhead = statistics.median(
            overhead_per_trial(r["wall_s"], r["cpus"], r["sum_train_s"], r["trials_completed"])
            for r in rs
        )
        busy = [r["cpu_busy_avg"] for r in rs if r["cpu_busy_avg"] is not None]
        points.append(
            {
                "workers": n,
                "cpus": cpus,
                "runs": [
                    {
                        k: r[k]
                        for k in (
                            "wall_s",
                            "sum_train_s",
                            "trials_completed",
                            "trials",
                            "trials_errored",
                            "best_metric",
                            "cpu_busy_avg",
                            "cpu_busy_by_node",
                            "job_id",
                            "repeat",
                            "job_total_s",
                            "submit_to_result_s",
                            "timeline",
                            "retries",
                            "workers_replaced",
                            "disturbed_by",
                            "trial_processes",
                            "trial_processes_before_submit",
                            "start_uncertainty_s",
                            "driver",
                            "resize",
                            "configs",
                            "experiment",
                            "metric",
                            "mode",
                        )
                        if k in r
                    }
                    | {k: r[k] for k in extra if k in r}
                    for r in rs
                ],
                "cpus_per_trial": rs[0].get("cpus_per_trial", 1),
                "disturbed": all(r.get("disturbed_by") for r in rs),
                "disturbed_runs": sum(1 for r in rs if r.get("disturbed_by")),
                "wall_s_median": round(wall, 3),
                "submit_to_result_s_median": _median_of(timed[n], "submit_to_result_s"),
                "wall_s_min": round(min(r["wall_s"] for r in rs), 3),
                "wall_s_max": round(max(r["wall_s"] for r in rs), 3),
                "speedup": round(speedup, 3),
                "efficiency": round(speedup / n, 3),
                "overhead_per_trial_s": round(overhead, 4),
                "best_metric": best_of([r.get("best_metric") for r in rs], mode),
                "cpu_busy_avg": round(statistics.median(busy), 3) if busy else None,
            }
        )
    return points


def write_outputs(study: dict, runs: list[dict], out: Path, extra: tuple[str, ...] = ()) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(study, indent=2))
    cols = [
        "workers",
        "repeat",
        "job_id",
        "cpus",
        "wall_s",
        "sum_train_s",
        "trials_completed",
        "trials",
        "best_metric",
        *extra,
        "cpu_busy_avg",
        "job_total_s",
    ]
    with open(out / "points.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(runs)
    from rayscale import plot

    plot.scaling_png(study, out / "scaling.png")
