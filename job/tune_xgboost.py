"""Hyper-parameter search for an XGBoost regressor with Ray Tune (ASHA or FIFO).

Runs inside a Ray cluster (submitted with job/ as working_dir: ``python tune_xgboost.py``)
or from the repository root (``python job/tune_xgboost.py``). Imports nothing from
rayscale: it must run in a bare cluster image.

It reports back with one machine-readable line, ``RAYSCALE_RESULT {json}``, and writes the
same JSON to <storage-path>/<name>/rayscale-result.json. Progress goes out as
``RAYSCALE_PROGRESS {json}`` lines, one per finished trial. Bad input ends with one
``error: ...`` line (and a ``RAYSCALE_ERROR {json}`` line), exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import space as spacemod  # noqa: E402
import storage  # noqa: E402
import tracking  # noqa: E402
from baselines import run_joblib, run_sequential  # noqa: E402
from data import InputError  # noqa: E402
from inputs import parse_args, prepare  # noqa: E402
from protocol import ERROR_MARKER, RESULT_MARKER, emit  # noqa: E402
from record import build_record, final_scores  # noqa: E402
from search import run_tune, trial_order  # noqa: E402
from show import print_summary  # noqa: E402


def main(argv=None) -> int:
    t_start = time.perf_counter()
    a = parse_args(argv)
    space = a.space = spacemod.load(a.search_space)
    configs = spacemod.draw(space, a.num_samples, a.seed, a.max_rounds)
    if a.print_configs:  # before any data or storage: the configs depend on neither
        order = trial_order(list(range(len(configs))), a, key=lambda i: configs[i])
        print(json.dumps({"configs": configs, "order": order}))
        return 0
    # Every mode writes its record there: a path it cannot write fails now, not after the work.
    storage.prepare(a.storage_path)
    # Before the data: a tracking server that cannot be reached fails the job in seconds.
    tracker = tracking.Tracker(a.mlflow, a.mlflow_experiment, a.name) if a.mlflow else None
    table, payload, splits = prepare(a)
    print(
        f"data: {table.source}  rows={table.rows} features={table.features} "
        f"categorical={table.categorical or '-'}  configs={len(configs)} mode={a.mode} search={a.search_alg} "
        f"scheduler={a.scheduler if a.mode in ('tune', 'both') else '-'}",
        flush=True,
    )

    runs = run_modes(a, configs, payload, tracker)
    primary = runs["tune" if "tune" in runs else a.mode]
    ok = [t for t in primary["trials"] if t.get("rmse") is not None and not t.get("error")]
    best = min(ok, key=lambda t: t["rmse"]) if ok else None
    baseline, tuned = final_scores(
        best["config"] if best else None, splits, a.cpus_per_trial, remote="tune" in runs
    )
    record = build_record(a, table, configs, runs, primary, best, baseline, tuned)
    print_summary(record)
    record["total_s"] = round(time.perf_counter() - t_start, 3)
    if best is None:  # every trial failed: no config to report, and the record says so
        first = next(
            (t["error"] for t in primary["trials"] if t.get("error")), "no trial reported a metric"
        )
        record.update(
            status="failed",
            error=f"every trial failed ({len(primary['trials'])} of "
            f"{len(configs)}); the first: {first}",
        )
    else:
        record["status"] = "succeeded"
    if tracker:
        record["mlflow"] = tracker.record(record)
    record["result_path"] = storage.write_record(
        a.storage_path, a.name, json.dumps(record, indent=2)
    )
    if best is None:
        raise SearchFailed(record["error"])
    emit(RESULT_MARKER, record)
    return 0


def run_modes(a, configs, payload, tracker) -> dict:
    runs = {}
    if a.mode in ("tune", "both"):
        runs["tune"] = run_tune(a, configs, payload, tracker)
    if a.mode in ("sequential", "both"):
        runs["sequential"] = run_sequential(a, configs, payload)
    if a.mode == "joblib":
        runs["joblib"] = run_joblib(a, configs, payload)
    return runs


class SearchFailed(Exception):
    """The search ran but no trial finished: exit 1, the first trial error quoted."""


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        emit(ERROR_MARKER, {"error": str(e), "kind": "input"})
        sys.exit(2)
    except SearchFailed as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        emit(ERROR_MARKER, {"error": str(e), "kind": "search"})
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
