"""The Tune search itself: the scheduler, the search algorithm, Tuner.fit / restore, and
each trial's row for the record."""

from __future__ import annotations

import contextlib
import time
import traceback

import relay
import space as spacemod
import storage
import train
import tune_format
from data import InputError
from progress import Progress
from recovery import enter_storage, restart_vanished, resume_lost, storage_fault_line

from cluster import (
    check_fits,
    cluster_size,
    join_ray,
    trial_error,
    trial_resources,
    trial_slots,
    worker_nodes,
)


def trial_order(configs, a, key=None):
    """FIFO: longest first, so the slots finish together. ASHA: the drawn (random) order,
    so cheap and expensive configs mix and a rung has results to compare against before
    the expensive ones reach it; longest-first would let every expensive trial through.
    KEY: each item's config, where the items are not configs themselves."""
    return spacemod.longest_first(configs, key) if a.scheduler == "fifo" else configs


def scheduler(a):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if a.scheduler == "asha":
        return ASHAScheduler(
            time_attr="rounds",
            max_t=a.max_rounds,
            grace_period=a.grace_rounds,
            reduction_factor=a.reduction_factor,
        )
    return FIFOScheduler()


def search(a, configs, slots: int):
    """(search algorithm, param space, num_samples) for --search-alg."""
    from ray import tune

    if a.search_alg == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        # TPE learns from finished trials: no more in flight than the cluster has slots, or
        # the first wave is as blind as a random search.
        return (
            ConcurrencyLimiter(OptunaSearch(seed=a.seed), max_concurrent=slots),
            {"cfg": spacemod.tune_space(a.space, a.max_rounds)},
            a.num_samples,
        )
    # The drawn configs as a grid: one sample of it.
    return None, {"cfg": tune.grid_search(trial_order(configs, a))}, 1


def run_tune(a, configs, payload, tracker=None) -> dict:
    from ray import tune

    join_ray()
    tune_format.warn_once()
    enter_storage(a.storage_path)
    plan = None
    if a.search_alg != "optuna" and not a.restore:  # the drawn configs, in run order
        plan = [
            [round(spacemod.cost(c), 1), int(c.get("num_boost_round") or 0)]
            for c in trial_order(configs, a)
        ]
    asha = (
        {"grace": a.grace_rounds, "rf": a.reduction_factor, "max": a.max_rounds}
        if a.scheduler == "asha"
        else None
    )
    progress = Progress(len(configs), restoring=a.restore, plan=plan, asha=asha)
    resources = trial_resources(a)
    workers = worker_nodes()
    check_fits(resources, workers)
    trainable = tune.with_resources(
        tune.with_parameters(train.tune_trainable, data=payload), resources
    )
    # The search runs (and any restore of it) with relays to this process's callbacks.
    relay.live([progress.callback, *([tracker.callback()] if tracker else [])])
    run_config = tune.RunConfig(
        name=a.name,
        storage_path=a.storage_path,
        failure_config=tune.FailureConfig(max_failures=a.max_failures),
        callbacks=[relay.Relay()],
        stop=relay.Stop(),
        verbose=0,
    )
    searcher, param_space, num_samples = search(a, configs, trial_slots(resources, workers))
    tune_config = tune.TuneConfig(
        metric="rmse",
        mode="min",
        scheduler=scheduler(a),
        search_alg=searcher,
        num_samples=num_samples,
        reuse_actors=True,
    )
    t0, t0_epoch = time.perf_counter(), time.time()
    path = f"{a.storage_path.rstrip('/')}/{a.name}"
    # Object storage is read less often: each look is a round trip.
    progress.state_copy = storage.StateCopy(path, a.name, 5.0 if storage.is_uri(path) else 1.0)
    if not a.restore:
        progress.state_copy.reset()

    def restored(restart_errored: bool = False):
        return tune.Tuner.restore(
            path,
            trainable=trainable,
            resume_errored=not restart_errored,
            restart_errored=restart_errored,
            **({} if a.search_alg == "optuna" else {"param_space": param_space}),
        )

    if a.restore:
        put = progress.state_copy.put_back()
        if put:
            print(f"put back Tune's state files cut short on the storage path: {put}", flush=True)
        if not tune.Tuner.can_restore(path):
            raise InputError(f"no search to restore at {path}; check --storage-path and --name")
        tuner = restored()
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
        )
    # Tune writes its tuner file once, when the search starts, and cannot restore without it;
    # the experiment state it saves again at the end. A folder that vanished lost it.
    put_back_tuner = storage.keeper(f"{path}/{tune_format.TUNER_FILE}")
    try:
        grid = tuner.fit()
    except Exception:
        # Tune reads the results back from the storage path: a full one may hold a
        # truncated file there (EOFError unpickling a trial's error). And the driver's own
        # write there (Tune's experiment state) can meet the fault before any trial does.
        progress.storage_fault = progress.storage_fault or storage.fault_of(
            traceback.format_exc(), a.restore
        )
        if not progress.storage_fault:
            raise
    if progress.storage_fault:
        with contextlib.suppress(OSError):  # a full disk may not take it either
            put_back_tuner()
        progress.state_copy.persist()
        raise InputError(storage_fault_line(a, progress))
    grid = resume_lost(grid, restored, progress, a.max_failures)
    if a.restore:
        grid = restart_vanished(grid, restored)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "trials": [trial_row(r, a, progress) for r in grid],
        "cluster": cluster_size(),
        "retried": dict(progress.retried),
        "search_window": [t0_epoch, t0_epoch + wall],
        "controller_started_at": progress.controller_started_at,
    }


def trial_row(r, a, progress) -> dict:
    """One trial of the record, from Tune's result."""
    m = r.metrics or {}
    # As train_s, 0 for a trial that never reported; None where it reported no CPU time
    # (resumed from a checkpoint written before trials clocked it).
    cpu = m.get("train_cpu_s", 0.0)
    return {
        "trial_id": m.get("trial_id"),
        # A trial that errored before its first report has no config in its result.
        "config": spacemod.normalise(r.config["cfg"], a.max_rounds) if r.config else None,
        "rounds": m.get("rounds", 0),
        "train_s": round(m.get("train_s", 0.0), 4),
        "train_cpu_s": None if cpu is None else round(cpu, 4),
        "rmse": train.finite(m.get("rmse")),
        "node_id": m.get("node_id"),
        "error": trial_error(r.error) if r.error else None,
        "retries": progress.retried.get(m.get("trial_id"), 0),
        "resumed_from": m.get("resumed_from"),
        "pid": m.get("pid"),
        "started_at": m.get("started_at"),
        "ended_at": m.get("ended_at"),
        "process_started_at": m.get("process_started_at"),
        "actor_ready_at": progress.actor_ready_at.get(m.get("trial_id")),
        "setup_s": m.get("setup_s"),
        "heavy_imports": m.get("heavy_imports"),
        "marks": m.get("marks"),
    }
