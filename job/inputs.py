"""The job's arguments and its data: parsed, checked (one line for bad input), split."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import time

import data as datamod
import storage
import tracking
from data import InputError

HERE = os.path.dirname(os.path.abspath(__file__))


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


def run_name(s: str) -> str:
    """A run's name is a folder under the storage path and the record's file name: one path
    part, so `--name ../x` cannot write beside other runs."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,99}", s):
        raise argparse.ArgumentTypeError(
            f"{s!r} is not 1-100 letters, digits, '_', '.' or '-' starting with a letter or digit"
        )
    return s


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
    p.add_argument("--name", type=run_name, default=None, help="run name (default: tune-<time>)")
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
