"""The job's record: the final scores, the trials, versions; written beside Tune's output."""

from __future__ import annotations

import json
import platform
import sys

import space as spacemod
import train


def final_scores(best_cfg, splits, nthread, remote: bool) -> tuple[dict, dict]:
    """Baseline (default params) and the best config, retrained on all of train, on test.

    Under Ray this runs as one task on a worker: the head runs no heavy work.
    """
    X_train, y_train, X_test, y_test = splits

    def both():
        return (
            train.fit_and_score(None, X_train, y_train, X_test, y_test, nthread),
            train.fit_and_score(best_cfg, X_train, y_train, X_test, y_test, nthread)
            if best_cfg
            else None,
        )

    if not remote:
        return both()
    import ray

    return ray.get(ray.remote(num_cpus=nthread)(both).remote())


# ---- report -------------------------------------------------------------------------


def summarise(run: dict, a) -> dict:
    ok = [t for t in run["trials"] if t.get("rmse") is not None and not t.get("error")]
    sum_train = sum(t["train_s"] for t in run["trials"])
    cpu = [t.get("train_cpu_s") for t in run["trials"]]
    wall = run["wall_s"]
    return {
        "wall_s": round(wall, 3),
        "sum_train_s": round(sum_train, 3),
        # None where a trial did not measure it (one restored from an older checkpoint).
        "sum_train_cpu_s": round(sum(cpu), 3) if None not in cpu else None,
        "trials_completed": len(ok),
        "trials_errored": len(run["trials"]) - len(ok),
        "cores_busy_avg": round(sum_train * a.cpus_per_trial / wall, 3) if wall else None,
        "best_valid_rmse": min((t["rmse"] for t in ok), default=None),
    }


def versions() -> dict:
    import pandas
    import sklearn
    import xgboost

    out = {
        "python": platform.python_version(),
        "xgboost": xgboost.__version__,
        "sklearn": sklearn.__version__,
        "pandas": pandas.__version__,
    }
    try:
        import ray

        out["ray"] = ray.__version__
    except ImportError:
        pass
    return out


def number_draws(trials: list[dict], configs: list[dict], max_rounds: int) -> None:
    """Each trial's `draw`: its config's place in the drawn order (None for a config an
    adaptive search made). A FIFO search runs them longest first; rayscale.predict replays
    ASHA, which runs them as drawn, from a FIFO study."""
    key = {
        json.dumps(spacemod.normalise(c, max_rounds), sort_keys=True): i
        for i, c in enumerate(configs)
    }
    for t in trials:
        t["draw"] = key.get(json.dumps(t["config"], sort_keys=True)) if t.get("config") else None


def build_record(a, table, configs, runs, primary, best, baseline, tuned) -> dict:
    number_draws(primary["trials"], configs, a.max_rounds)
    record = {
        "mode": a.mode,
        "name": a.name,
        "data": table.source,
        "rows": table.rows,
        "features": table.features,
        "categorical": table.categorical,
        "num_samples": len(configs),
        "scheduler": a.scheduler if "tune" in runs else None,
        "search_alg": a.search_alg,
        "cpus_per_trial": a.cpus_per_trial,
        "memory_per_trial_gib": a.memory_per_trial,
        "max_rounds": a.max_rounds,
        **summarise(primary, a),
        "trials": primary["trials"],
        "retried_trials": primary.get("retried", {}),
        "search_window": primary.get("search_window"),
        "controller_started_at": primary.get("controller_started_at"),
        "best_config": best["config"] if best else None,
        "baseline": baseline,
        "tuned": tuned,
        "cluster": primary["cluster"],
        "versions": versions(),
        # What the driver loaded of the heavy modules.
        "driver_heavy_imports": [m for m in (*train.HEAVY, "mlflow") if m in sys.modules],
        "total_s": None,
    }
    # One mode's figures are the record's own; several (or the joblib baseline) side by side.
    if len(runs) > 1 or a.mode == "joblib":
        record["modes"] = {m: summarise(r, a) for m, r in runs.items()}
        if "sequential" in runs and "tune" in runs:
            record["speedup_vs_sequential"] = round(
                runs["sequential"]["wall_s"] / runs["tune"]["wall_s"], 3
            )
    return record
