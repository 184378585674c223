"""The same configs without a cluster: the plain loop, joblib, and plain Optuna."""

from __future__ import annotations

import time

import space as spacemod
import train
from protocol import PROGRESS_MARKER, emit


def run_optuna_local(a, payload, n_jobs: int) -> dict:
    """Plain Optuna on one machine (study.optimize, TPE, the same budget): the baseline a
    user would pick instead of Ray. Threads: XGBoost releases the GIL while it trains."""
    import threading

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=a.seed)
    )
    trials: list[dict] = []
    lock = threading.Lock()

    def objective(trial):
        t = train.sequential_one(
            spacemod.suggest(trial, a.space, a.max_rounds), payload, a.cpus_per_trial
        )
        with lock:
            trials.append(t)
            emit(
                PROGRESS_MARKER,
                {
                    "done": len(trials),
                    "total": a.num_samples,
                    "best_rmse": min(x["rmse"] for x in trials),
                },
            )
        return t["rmse"]

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=a.num_samples, n_jobs=n_jobs)
    return {
        "wall_s": time.perf_counter() - t0,
        "trials": trials,
        "cluster": {"nodes": 1, "cpus": n_jobs * a.cpus_per_trial, "worker_nodes": 0},
    }


def run_sequential(a, configs, payload) -> dict:
    if a.search_alg == "optuna":
        return run_optuna_local(a, payload, 1)
    t0 = time.perf_counter()
    trials = []
    for i, cfg in enumerate(configs):
        t_trial = time.time()
        trials.append(train.sequential_one(cfg, payload, a.cpus_per_trial))
        best = min(t["rmse"] for t in trials)
        now = time.time()
        emit(
            PROGRESS_MARKER,
            {
                "done": i + 1,
                "total": len(configs),
                "best_rmse": best,
                # One trial at a time: the launcher's ETA draws from these (rayscale/eta.py).
                "at": round(now, 3),
                "trial_s": round(now - t_trial, 3),
                "running_s": [],
            },
        )
    return {
        "wall_s": time.perf_counter() - t0,
        "trials": trials,
        "cluster": {"nodes": 1, "cpus": a.cpus_per_trial, "worker_nodes": 0},
    }


def run_joblib(a, configs, payload) -> dict:
    if a.search_alg == "optuna":
        return run_optuna_local(a, payload, a.n_jobs)
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    trials = Parallel(n_jobs=a.n_jobs)(  # same longest-first order as the Tune run
        delayed(train.sequential_one)(cfg, payload, a.cpus_per_trial)
        for cfg in spacemod.longest_first(configs)
    )
    return {
        "wall_s": time.perf_counter() - t0,
        "trials": list(trials),
        "cluster": {"nodes": 1, "cpus": a.n_jobs * a.cpus_per_trial, "worker_nodes": 0},
    }
