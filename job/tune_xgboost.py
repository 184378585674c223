"""Hyper-parameter search for an XGBoost regressor with Ray Tune (ASHA or FIFO).

Runs inside a Ray cluster (submitted with job/ as working_dir: ``python tune_xgboost.py``)
or from the repository root (``python job/tune_xgboost.py``). Imports nothing from
rayscale: it must run in a bare cluster image.

It reports back with one machine-readable line, ``RAYSCALE_RESULT {json}``, and writes the
same JSON to <storage-path>/<name>/result.json. Progress goes out as
``RAYSCALE_PROGRESS {json}`` lines, one per finished trial. Bad input ends with one
``error: ...`` line (and a ``RAYSCALE_ERROR {json}`` line), exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import data as datamod  # noqa: E402
import relay  # noqa: E402
import space as spacemod  # noqa: E402
import storage  # noqa: E402
import tracking  # noqa: E402
import train  # noqa: E402
from data import InputError  # noqa: E402

RESULT_MARKER = "RAYSCALE_RESULT"
PROGRESS_MARKER = "RAYSCALE_PROGRESS"
ERROR_MARKER = "RAYSCALE_ERROR"


def emit(marker: str, payload: dict) -> None:
    print(f"{marker} {json.dumps(payload, separators=(',', ':'))}", flush=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        raise InputError(f"{message}; see `python tune_xgboost.py --help`")


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s!r} must be >= 1")
    return v


def positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{s!r} must be > 0")
    return v


def parse_args(argv=None):
    p = _Parser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        default="synthetic:rows=5000,features=20,noise=1.0,seed=0",
        help="CSV/Parquet path or URL, or synthetic:rows=R,features=F,noise=X,seed=S",
    )
    p.add_argument("--target", help="target column (not needed for synthetic data)")
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument(
        "--valid-size",
        type=float,
        default=0.2,
        help="fraction of the train split held out to score trials",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=positive_int, default=16, help="number of configs tried")
    p.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    p.add_argument(
        "--search-alg",
        choices=["random", "optuna"],
        default="random",
        help="random: configs drawn up front (the same in every mode and at every point of a "
        "scaling study); optuna: Optuna's TPE picks each config from the results so far",
    )
    p.add_argument(
        "--max-rounds", type=positive_int, default=300, help="boosting rounds cap per trial"
    )
    p.add_argument(
        "--grace-rounds",
        type=positive_int,
        default=None,
        help="ASHA never stops a trial before this many rounds (default: max-rounds / 4)",
    )
    p.add_argument("--reduction-factor", type=positive_int, default=3)
    p.add_argument(
        "--report-every",
        type=int,
        default=0,
        help="rounds between reports to Tune; 0 (default) reports only where needed: "
        "at ASHA's rungs, at checkpoints and at the end",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="rounds between trial checkpoints, 0 = off (default: max-rounds / 4)",
    )
    p.add_argument(
        "--checkpoint-min-s",
        type=float,
        default=10.0,
        help="a trial checkpoints only once it has trained this long since its last "
        "checkpoint (or its start): a shorter stretch is cheaper to retry than to save",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=positive_int,
        default=1,
        help="Tune's CPUs per trial, and XGBoost's nthread",
    )
    p.add_argument(
        "--memory-per-trial",
        type=positive_float,
        default=None,
        metavar="GIB",
        help="Tune's memory per trial in GiB (Ray schedules on it; default: none asked)",
    )
    p.add_argument("--max-failures", type=int, default=3, help="retries per trial on node loss")
    p.add_argument("--search-space", default=os.path.join(HERE, "search_space.yaml"))
    p.add_argument("--mode", choices=["tune", "sequential", "joblib", "both"], default="tune")
    p.add_argument("--n-jobs", type=positive_int, default=2, help="processes for --mode joblib")
    p.add_argument(
        "--storage-path",
        default=os.path.expanduser("~/rayscale_results"),
        help="Tune's storage, shared by every node: a shared directory, s3://bucket/path "
        "or gs://bucket/path (AWS_ENDPOINT_URL for an S3-compatible store)",
    )
    p.add_argument("--name", default=None, help="run name (default: tune-<time>)")
    p.add_argument(
        "--mlflow",
        metavar="URI",
        type=tracking.check_uri,
        help="log every trial and the outcome to this MLflow tracking server (http[s]://...)",
    )
    p.add_argument(
        "--mlflow-experiment",
        default="rayscale",
        metavar="NAME",
        help="MLflow experiment for --mlflow (made if missing)",
    )
    p.add_argument(
        "--print-configs",
        action="store_true",
        help="print the configs the search would try, as JSON with the order it runs them "
        "in, and exit (rayscale plan prices a larger search from them)",
    )
    p.add_argument(
        "--restore",
        action="store_true",
        help="resume the search stored under --storage-path/--name (after a head loss)",
    )
    a = p.parse_args(argv)
    if a.scheduler == "asha" and a.num_samples < 2:
        raise InputError(
            "--scheduler asha needs --num-samples >= 2; use --scheduler fifo for one config"
        )
    a.grace_rounds = a.grace_rounds or max(1, a.max_rounds // 4)
    if a.checkpoint_every is None:
        a.checkpoint_every = max(1, a.max_rounds // 4)
    if a.report_every < 0:
        raise InputError(
            "--report-every must be >= 0 (0 reports only at rungs, checkpoints and the end)"
        )
    a.report_rounds = report_rounds(a)
    if a.checkpoint_every < 0:
        raise InputError("--checkpoint-every must be >= 0 (0 turns checkpoints off)")
    if not a.checkpoint_min_s >= 0:  # NaN too
        raise InputError(
            "--checkpoint-min-s must be >= 0 (0 checkpoints at every --checkpoint-every)"
        )
    if a.grace_rounds > a.max_rounds:
        raise InputError(
            f"--grace-rounds {a.grace_rounds} exceeds --max-rounds {a.max_rounds}; lower it"
        )
    a.name = a.name or time.strftime("tune-%Y%m%d-%H%M%S")
    a.storage_path = storage.normalise(a.storage_path)
    return a


def report_rounds(a) -> list[int]:
    """The rounds at which trials report to Tune (the end of each trial always reports, and
    each checkpoint, checkpoint_rounds, goes with a report).

    A report is a round trip through the Tune driver; every one costs trial time. ASHA
    only looks at its rungs (grace * rf^k), so only those are reported.
    """
    marks = set()
    if a.report_every:
        marks |= set(range(a.report_every, a.max_rounds + 1, a.report_every))
    if a.scheduler == "asha":
        marks |= set(rung_rounds(a))
    return sorted(marks)


def checkpoint_rounds(a) -> list[int]:
    """The rounds at which a trial may checkpoint (it does where --checkpoint-min-s has
    passed since its last)."""
    if not a.checkpoint_every:
        return []
    return list(range(a.checkpoint_every, a.max_rounds, a.checkpoint_every))


def rung_rounds(a) -> list[int]:
    """ASHA's rungs for these arguments (Tune's: grace * rf^k below max_t). Every trial notes
    its validation RMSE and time there, whatever the scheduler, with no report to Tune:
    rayscale.predict replays ASHA on those notes."""
    out, r = [], a.grace_rounds
    while r < a.max_rounds:
        out.append(r)
        r *= a.reduction_factor
    return out


# ---- data ---------------------------------------------------------------------------------


def prepare(a):
    table = datamod.load(a.data, a.target)
    X_train, X_test, y_train, y_test = datamod.split(table, a.test_size, a.seed)
    from sklearn.model_selection import train_test_split

    X_fit, X_valid, y_fit, y_valid = train_test_split(
        X_train, y_train, test_size=a.valid_size, random_state=a.seed + 1
    )
    key = hashlib.sha1(
        f"{a.data}|{a.target}|{a.seed}|{a.test_size}|{a.valid_size}".encode()
    ).hexdigest()[:16]
    payload = {
        "key": key,
        "X_train": X_fit,
        "y_train": y_fit,
        "X_valid": X_valid,
        "y_valid": y_valid,
        "nthread": a.cpus_per_trial,
        "report_rounds": a.report_rounds,
        "rung_rounds": rung_rounds(a),
        "checkpoint_rounds": checkpoint_rounds(a),
        "checkpoint_min_s": a.checkpoint_min_s,
    }
    return table, payload, (X_train, y_train, X_test, y_test)


# ---- modes ----------------------------------------------------------------------------


class Progress:
    """Tune callback: one progress line per finished trial; remembers retried trials."""

    def __init__(self, total: int, restoring: bool = False):
        from ray.tune import Callback

        outer = self

        class _CB(Callback):
            # Where a search's first seconds go (docs/benchmarks.md): Tune's controller
            # starting, then each trial's actor ready (placed, started, its __init__ run).
            def setup(self, **info):
                outer.controller_started_at = outer.controller_started_at or time.time()

            def on_trial_start(self, iteration, trials, trial, **info):
                outer.actor_ready_at.setdefault(trial.trial_id, time.time())

            def on_trial_complete(self, iteration, trials, trial, **info):
                outer.done += 1
                rmse = trial.last_result.get("rmse")
                if rmse is not None and (outer.best is None or rmse < outer.best):
                    outer.best = rmse
                emit(
                    PROGRESS_MARKER,
                    {
                        "done": outer.done,
                        "total": outer.total,
                        "best_rmse": outer.best,
                        "trial": trial.trial_id,
                    },
                )

            def on_step_end(self, iteration, trials, **info):
                if outer.state_copy and not outer.storage_fault:
                    outer.state_copy.save()

            def on_trial_error(self, iteration, trials, trial, **info):
                outer.errored.add(trial.trial_id)
                outer.check_storage(trial)

            def on_trial_recover(self, iteration, trials, trial, **info):
                outer.retried.setdefault(trial.trial_id, 0)
                outer.retried[trial.trial_id] += 1
                outer.check_storage(trial)

        self.total, self.done, self.best = total, 0, None
        self.controller_started_at: float | None = None
        self.actor_ready_at: dict[str, float] = {}
        self.retried: dict[str, int] = {}
        self.errored: set[str] = set()
        self.storage_fault: str | None = None
        self.restoring, self.interrupted = restoring, False
        self.state_copy: storage.StateCopy | None = None
        self.callback = _CB()

    def check_storage(self, trial) -> None:
        """A trial that failed writing to the storage path (full, read-only, gone) will fail
        the same way on every retry, and so will every trial after it: end the search."""
        try:
            # The error file is in the driver's own staging dir, not on the storage path.
            text = Path(trial.error_file).read_text() if trial.error_file else ""
        except OSError:
            return
        # Tune appends each failure to it, a restored trial's earlier ones too: the last.
        text = text.rsplit("Failure # ", 1)[-1]
        fault = storage.fault_of(text, self.restoring)
        if fault and not self.storage_fault:
            self.storage_fault = fault
            self.interrupted = interrupt_search()
            self.stop_if_faulted()

    def stop_if_faulted(self) -> None:
        """The fallback where Tune's Ctrl-C handler is not installed (a search run off the
        main thread): the stopper ends the search."""
        relay.STOP["all"] = self.storage_fault is not None and not self.interrupted


def interrupt_search() -> bool:
    """End the search as Ctrl-C does (SIGINT, Tune's documented stop): Tune saves its state
    one last time with the trials in flight still unfinished, so `job resume` runs them
    again. A stopper's stop_all would mark them TERMINATED, as if they had finished, and a
    resume would never run them. False where Tune installed no handler for it."""
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler) or handler is signal.default_int_handler:
        return False
    signal.raise_signal(signal.SIGINT)
    return True


def trial_order(configs, a, key=None):
    """FIFO: longest first, so the slots finish together. ASHA: the drawn (random) order,
    so cheap and expensive configs mix and a rung has results to compare against before
    the expensive ones reach it; longest-first would let every expensive trial through.
    KEY: each item's config, where the items are not configs themselves."""
    return spacemod.longest_first(configs, key) if a.scheduler == "fifo" else configs


def run_tune(a, configs, payload, tracker=None) -> dict:
    from ray import tune

    join_ray()
    enter_storage(a.storage_path)
    progress = Progress(len(configs), restoring=a.restore)
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
    # Tune writes tuner.pkl once, when the search starts, and cannot restore without it;
    # the experiment state it saves again at the end. A folder that vanished lost it.
    put_back_tuner = storage.keeper(f"{path}/tuner.pkl")
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


def join_ray() -> None:
    import ray
    import ray.cloudpickle

    if ray.is_initialized():
        return

    # What runs on the workers (the trainable, the final fit) goes to them by value: a job
    # whose code is already on the nodes is submitted without a working_dir, and a runtime
    # env of any kind costs every worker process it starts ~0.7 s here (docs/benchmarks.md).
    ray.cloudpickle.register_pickle_by_value(train)

    if os.environ.get("RAY_ADDRESS"):  # inside a job: join the cluster
        ray.init(logging_level="WARNING", log_to_driver=False)
    else:  # from a shell: a private single-node Ray for this run
        ray.init(logging_level="WARNING", log_to_driver=False, include_dashboard=False)


def enter_storage(storage_path: str) -> None:
    """Check the storage path every node must share, and run the driver from it.

    The driver's working dir is Ray's unpacked copy of job/. Where nodes share one session
    dir (Ray's fake multi-node clusters) another node's agent unpacks it again in place,
    and a cwd that vanished breaks Tune's relative-path handling: run from the storage
    path (or, for object storage, a directory of our own)."""
    storage.check_shared(storage_path)
    if storage.is_uri(storage_path):
        import tempfile

        os.chdir(tempfile.mkdtemp(prefix="rayscale-driver-"))
    else:
        os.chdir(storage_path)


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


def resume_lost(grid, restored, progress, max_failures: int):
    """Tune retries a trial whose node died only if the trial was RUNNING; one still PENDING
    there (its actor starting, or being reset for it) ends in ERROR at once. Those are
    resumed here, from their last checkpoint, within the same --max-failures budget."""
    for _ in range(max_failures):
        lost = [
            (r.metrics or {}).get("trial_id") or os.path.basename(r.path)
            for r in grid
            if r.error and node_lost(r.error)
        ]
        if not lost:
            break
        print(f"resuming {len(lost)} trial(s) lost with their node: {', '.join(lost)}", flush=True)
        for trial_id in lost:
            progress.retried[trial_id] = progress.retried.get(trial_id, 0) + 1
        grid = restored().fit()
    return grid


def storage_fault_line(a, progress) -> str:
    """The one line a storage fault ends the job with: which path, what to do next."""
    resume = f"run `rayscale job resume {a.name} -- <the same job args>`"
    head = (
        f"--storage-path {a.storage_path}: {progress.storage_fault} after {progress.done} "
        "finished trials; "
    )
    if progress.storage_fault == storage.VANISHED:
        return head + (
            "bring the volume back if it was unmounted (or pass a path nothing else "
            f"deletes) and {resume}: Tune saved its state there again at the end, so the "
            "finished trials are kept and the ones in flight start again"
        )
    return head + (
        f"make room there and {resume} on this cluster: the search goes on from Tune's last "
        "whole saved state (put back from the head's copy if the full disk cut it short); "
        "trials that finished after it run again"
    )


def restart_vanished(grid, restored):
    """A resumed search whose folder had vanished: the trials that were in flight lost their
    checkpoints with it and Tune cannot restore them. They start again from scratch."""
    gone = [r for r in grid if r.error and storage.CHECKPOINT_GONE in str(r.error)]
    if not gone:
        return grid
    print(f"starting again {len(gone)} trial(s) whose checkpoints vanished", flush=True)
    return restored(restart_errored=True).fit()


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


def cluster_size() -> dict:
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    return {
        "nodes": len(nodes),
        "cpus": sum(n["Resources"].get("CPU", 0) for n in nodes),
        "worker_nodes": sum(1 for n in nodes if n["Resources"].get("CPU", 0) > 0),
    }


def node_lost(e: BaseException) -> bool:
    """The trial's process or node died under it (not an error of the trial's own)."""
    from ray import exceptions as rx

    lost = (
        rx.RayActorError,
        rx.WorkerCrashedError,
        rx.NodeDiedError,
        rx.LocalRayletDiedError,
        rx.OwnerDiedError,
    )
    names = {c.__name__ for c in lost} | {"ActorDiedError", "ActorUnavailableError"}
    # Tune hands back the exception itself, or a TuneError carrying its text.
    return isinstance(e, lost) or any(n in str(e) for n in names)


def trial_error(e: BaseException) -> str:
    """The cause of a trial's error in one line: Ray's task errors open with a header
    (`ray::ImplicitFunc.train() (pid=...)`) and end with the exception itself."""
    import re

    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", ln)]
    return ((raised or lines or [type(e).__name__])[-1])[:300]


def trial_resources(a) -> dict:
    out = {"cpu": a.cpus_per_trial}
    if a.memory_per_trial:
        out["memory"] = int(a.memory_per_trial * 2**30)
    return out


def worker_nodes() -> list[dict]:
    """The alive nodes that run trials (the head has no CPUs for them)."""
    import ray

    return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]


def trial_slots(resources: dict, nodes: list[dict]) -> int:
    """How many trials the workers can run at once."""
    return max(1, sum(int(n["Resources"]["CPU"] // resources["cpu"]) for n in nodes))


def check_fits(resources: dict, nodes: list[dict]) -> None:
    """Refuse a trial no worker can host: Tune would wait for it forever."""
    if not nodes:
        return
    fits = [
        n
        for n in nodes
        if n["Resources"].get("CPU", 0) >= resources["cpu"]
        and n["Resources"].get("memory", 0) >= resources.get("memory", 0)
    ]
    if not fits:
        big = max(
            nodes, key=lambda n: (n["Resources"].get("CPU", 0), n["Resources"].get("memory", 0))
        )
        asked = f"{resources['cpu']} CPUs" + (
            f" and {resources['memory'] / 2**30:g} GiB" if "memory" in resources else ""
        )
        raise InputError(
            f"a trial asks for {asked}, but the biggest worker has {big['Resources'].get('CPU', 0):g} "
            f"CPUs and {big['Resources'].get('memory', 0) / 2**30:.1f} GiB; lower --cpus-per-trial / "
            "--memory-per-trial or add bigger workers"
        )


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
        trials.append(train.sequential_one(cfg, payload, a.cpus_per_trial))
        best = min(t["rmse"] for t in trials)
        emit(PROGRESS_MARKER, {"done": i + 1, "total": len(configs), "best_rmse": best})
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


def print_table(title: str, rows: list[tuple]) -> None:
    width = max(len(str(r[0])) for r in rows)
    print(f"\n{title}")
    for row in rows:
        print("  " + str(row[0]).ljust(width) + "  " + "  ".join(f"{c:>14}" for c in row[1:]))


def fmt(x, nd=3):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


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


def print_summary(record: dict) -> None:
    """The job's own tables, for whoever reads its log (the launcher reads the record)."""
    baseline, tuned = record["baseline"], record["tuned"]
    print_table(
        "Test-set scores (retrained on the whole train split)",
        [
            ("model", "RMSE", "MAE", "R2"),
            (
                "baseline (defaults)",
                fmt(baseline["rmse"]),
                fmt(baseline["mae"]),
                fmt(baseline["r2"]),
            ),
            (
                "tuned (best config)",
                *(fmt(tuned[k]) if tuned else "-" for k in ("rmse", "mae", "r2")),
            ),
        ],
    )
    modes = record.get("modes") or {record["mode"]: record}
    ref = modes.get("sequential", {}).get("wall_s")
    print_table(
        "Execution",
        [
            ("mode", "train time s", "total s", "cores busy", "speedup"),
            *[
                (
                    m,
                    fmt(s["sum_train_s"], 1),
                    fmt(s["wall_s"], 1),
                    fmt(s["cores_busy_avg"], 2),
                    fmt(ref / s["wall_s"], 2) + "x" if ref and s["wall_s"] else "-",
                )
                for m, s in modes.items()
            ],
        ],
    )
    print(f"\nbest config: {json.dumps(record['best_config'])}", flush=True)


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
