"""Training one config: shared by Ray Tune trials, the sequential loop and joblib.

The three modes must train the same way for their times to be comparable, so they all
go through ``fit``.

Where the job's code is not shipped as a working_dir (it is on every node already), Ray
pickles this module by value into the trial processes, which then import nothing of the
job's: XGBoost is reached through xgb() so that unpickling does not import it unguarded.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np


def xgb():
    """XGBoost, imported without scikit-learn where that is not loaded yet.

    XGBoost imports scikit-learn (and with it scipy.stats) at import time only for its
    sklearn wrapper, which nothing here uses: 1-1.5 s of every trial process's start-up. A
    None entry in sys.modules makes `import sklearn` fail, the case XGBoost handles; the
    driver imports scikit-learn later for the split and the metrics as usual."""
    if "xgboost" in sys.modules or "sklearn" in sys.modules:
        import xgboost
    else:
        sys.modules["sklearn"] = None
        try:
            import xgboost
        finally:
            del sys.modules["sklearn"]
    return xgboost


# What a trial process has loaded beyond what training needs (reported with each trial).
HEAVY = ("sklearn", "scipy.stats")

FIXED = {
    "objective": "reg:squarederror",
    "eval_metric": "rmse",
    "tree_method": "hist",
    "verbosity": 0,
}


def params(cfg: dict, nthread: int) -> dict:
    p = {k: v for k, v in cfg.items() if k != "num_boost_round"}
    p.update(FIXED, nthread=nthread)
    return p


class _PerProcess(dict):
    """A cache that stays in its process: pickled (with this module, by value) as empty,
    so a driver that has trained already ships no DMatrix (ctypes) to the trials."""

    def __reduce__(self):
        return (type(self), ())


_cache: dict = _PerProcess()


def dmatrices(data: dict, nthread: int):
    """Build the train / validation DMatrix once per process and data set.

    With reuse_actors a trial process serves many trials; rebuilding the DMatrix
    (quantile sketch of every feature) for each would cost more than a short trial.
    """
    key = (data["key"], nthread)
    if key not in _cache:
        _cache.clear()
        DMatrix = xgb().DMatrix
        _cache[key] = (
            DMatrix(data["X_train"], data["y_train"], enable_categorical=True, nthread=nthread),
            DMatrix(data["X_valid"], data["y_valid"], enable_categorical=True, nthread=nthread),
        )
    return _cache[key]


def reporter(rounds, total: int, first_round: int, on_report):
    """An XGBoost callback calling on_report(booster, rounds done, rmse) at each of rounds
    and at the end (a class made here, where XGBoost is imported, not at module level)."""

    class _At(xgb().callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            done = first_round + epoch + 1
            if done in wanted or done == total:
                on_report(model, done, float(evals_log["valid"]["rmse"][-1]))
            return False

    wanted = set(rounds)
    return _At()


def fit(
    cfg: dict,
    dtrain,
    dvalid,
    nthread: int,
    report_rounds=None,
    on_report=None,
    model=None,
    first_round: int = 0,
):
    """Train cfg for its num_boost_round rounds (continuing `model` from `first_round`).

    on_report(booster, rounds, rmse) is called at each of report_rounds and at the end.
    Returns (booster, validation rmse, seconds spent training).
    """
    total = int(cfg["num_boost_round"])
    callbacks = [reporter(report_rounds or (), total, first_round, on_report)] if on_report else []
    evals_log: dict = {}
    t0 = time.perf_counter()
    booster = xgb().train(
        params(cfg, nthread),
        dtrain,
        num_boost_round=max(0, total - first_round),
        evals=[(dvalid, "valid")],
        evals_result=evals_log,
        callbacks=callbacks,
        verbose_eval=False,
        xgb_model=model,
    )
    train_s = time.perf_counter() - t0
    rmse = float(evals_log["valid"]["rmse"][-1]) if evals_log.get("valid") else float("nan")
    return booster, rmse, train_s


def metrics(y_true, y_pred) -> dict:
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    return {
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def fit_and_score(cfg: dict | None, X_train, y_train, X_test, y_test, nthread: int) -> dict:
    """Retrain on the whole train split and score on the test split.

    cfg None trains XGBoost with its default parameters (100 rounds): the baseline.
    """
    DMatrix = xgb().DMatrix
    dtrain = DMatrix(X_train, y_train, enable_categorical=True, nthread=nthread)
    dtest = DMatrix(X_test, enable_categorical=True, nthread=nthread)
    cfg = cfg or {"num_boost_round": 100}
    t0 = time.perf_counter()
    booster = xgb().train(params(cfg, nthread), dtrain, num_boost_round=int(cfg["num_boost_round"]))
    out = metrics(y_test, booster.predict(dtest))
    out["train_s"] = round(time.perf_counter() - t0, 3)
    return out


# ---- the Ray Tune trainable ------------------------------------------------------------


def _process_started() -> float:
    import psutil

    return started_at(psutil.Process())


def started_at(proc) -> float:
    """A process's start on the wall clock, to the clock tick. psutil's create_time adds
    the boot time, which /proc/stat gives in whole seconds: up to 1 s off the wall clock."""
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return proc.create_time()


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def tune_trainable(config: dict, data: dict) -> None:
    """One Tune trial; resumes from its last checkpoint when Tune retries it."""
    from ray import tune

    cfg = config["cfg"]
    nthread = data["nthread"]
    entered = time.time()
    dtrain, dvalid = dmatrices(data, nthread)
    node = _node_id()
    model, first, spent, spent_cpu = None, 0, 0.0, 0.0
    # [rounds, validation rmse, s since entering] at each ASHA rung and at the end, noted
    # without a report to Tune (a resumed trial keeps its first attempt's notes and times).
    marks: list = []
    ckpt = tune.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            model = xgb().Booster()
            model.load_model(os.path.join(d, "model.ubj"))
            meta = json.load(open(os.path.join(d, "meta.json")))
            first, spent = meta["rounds"], meta["train_s"]
            # None from a checkpoint written before trials clocked their CPU: unknown.
            spent_cpu = meta.get("train_cpu_s")
            marks = meta.get("marks", [])
    started, started_cpu = time.perf_counter(), time.thread_time()
    started_at = time.time()
    ckpt_rounds = set(data["checkpoint_rounds"])
    # Time inside tune.report, wall and CPU: Tune's overhead, not training.
    blocked, blocked_cpu = [0.0], [0.0]
    last_ckpt = [spent]  # the training its last checkpoint holds

    def trained() -> float:
        return spent + time.perf_counter() - started - blocked[0]

    def report(booster, rounds, rmse, checkpoint: bool):
        t_in, cpu_in = time.perf_counter(), time.thread_time()
        train_s = trained()
        # The CPU this thread (XGBoost's, at one thread) got while training: below train_s
        # by the time the trial was ready to run and had no core (docs/benchmarks.md).
        train_cpu_s = (
            None if spent_cpu is None else spent_cpu + cpu_in - started_cpu - blocked_cpu[0]
        )
        m = {
            "rmse": rmse,
            "rounds": rounds,
            "train_s": train_s,
            "train_cpu_s": train_cpu_s,
            "node_id": node,
            "resumed_from": first,
            "pid": os.getpid(),
            "started_at": started_at,
            "ended_at": time.time(),
            "process_started_at": _process_started(),
            "setup_s": started_at - entered,
            "heavy_imports": [m for m in HEAVY if m in sys.modules],
            "marks": marks,
        }
        if checkpoint:
            last_ckpt[0] = train_s
            with tempfile.TemporaryDirectory() as d:
                booster.save_model(os.path.join(d, "model.ubj"))
                with open(os.path.join(d, "meta.json"), "w") as f:
                    saved = {"rounds": rounds, "train_s": train_s, "train_cpu_s": train_cpu_s}
                    json.dump({**saved, "marks": marks}, f)
                tune.report(m, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(m)
        blocked[0] += time.perf_counter() - t_in
        blocked_cpu[0] += time.thread_time() - cpu_in

    total = int(cfg["num_boost_round"])
    if first >= total:
        return
    rungs, reports = set(data.get("rung_rounds", ())), set(data["report_rounds"])

    def at_round(booster, rounds, rmse):
        if rounds in rungs or rounds == total:
            marks.append([rounds, round(rmse, 6), round(time.time() - entered, 3)])
        # A checkpoint (and, under FIFO, the report that carries it) only once the trial has
        # trained --checkpoint-min-s since its last: retrying a shorter stretch costs less
        # than the round trips through the driver that would save it.
        ckpt = (
            rounds in ckpt_rounds
            and rounds < total
            and trained() - last_ckpt[0] >= data["checkpoint_min_s"]
        )
        if ckpt or rounds in reports or rounds == total:
            report(booster, rounds, rmse, ckpt)

    fit(
        cfg,
        dtrain,
        dvalid,
        nthread,
        sorted(rungs | reports | ckpt_rounds),
        at_round,
        model=model,
        first_round=first,
    )


def sequential_one(cfg: dict, data: dict, nthread: int) -> dict:
    started_at = time.time()
    dtrain, dvalid = dmatrices(data, nthread)
    cpu0 = time.thread_time()
    _, rmse, train_s = fit(cfg, dtrain, dvalid, nthread)
    return {
        "config": cfg,
        "rounds": int(cfg["num_boost_round"]),
        "train_s": round(train_s, 4),
        "train_cpu_s": round(time.thread_time() - cpu0, 4),
        "rmse": rmse,
        "node_id": "local",
        "pid": os.getpid(),
        "started_at": started_at,
        "ended_at": time.time(),
    }


def finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
