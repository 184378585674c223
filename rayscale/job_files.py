"""What of a job goes to the cluster: the job dir (the kit's job/ or a user's working dir),
what is never uploaded (secrets, caches, data), Ray's size cap, the digest that tells
the image's copy of job/ from this one, and the paths that must be absolute to mean
anything on a node."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path

from rayscale.endpoint import Endpoint
from rayscale.errors import UserError

# Never uploaded (Ray keeps a working_dir in the cluster's object store, readable by any
# job): rayscale's state dirs hold cluster tokens, .env files hold credentials.
SECRETS = [".rayscale*", ".env", ".env.*", "auth_token"]


# Never shipped to the cluster: VCS data, caches, and data files (data goes by path or URL).
EXCLUDES = [
    ".git",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    "*.csv",
    "*.parquet",
    "*.pq",
    "*.feather",
    "*.npy",
    "*.npz",
    "*.zip",
    "*.tar*",
    "results",
    ".venv",
    *SECRETS,
]


def default_job_dir() -> Path:
    env = os.environ.get("RAYSCALE_JOB_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "job"


def tune_format_file() -> Path:
    """The job's tune_format.py: the one module that knows Tune's unpublished formats (the
    head's readers carry it; the launcher loads it to read a script's console)."""
    return default_job_dir() / "tune_format.py"


def drawn_configs(job_args: list[str], num_samples: int, job_dir: Path | None = None) -> dict:
    """The configs the job would try with these arguments and NUM_SAMPLES, and the order it
    runs them in: the job's own `--print-configs`, so the draw is never copied here."""
    import subprocess
    import sys

    job_dir = Path(job_dir or default_job_dir())
    args, skip = [], False
    for a in localise_paths(job_args):  # the study's --num-samples gives way to NUM_SAMPLES
        if not skip and a != "--num-samples" and not a.startswith("--num-samples="):
            args.append(a)
        skip = a == "--num-samples"
    cmd = [sys.executable, str(job_dir / "tune_xgboost.py"), *args]
    cmd += ["--num-samples", str(num_samples), "--print-configs"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    try:
        out = json.loads(p.stdout)
        return {"configs": list(out["configs"]), "order": [int(i) for i in out["order"]]}
    except (ValueError, KeyError, TypeError):
        why = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(
            f"the job in {job_dir} could not list the study's configs ({why})",
            "run plan where the study's job dir and its Python packages are (make install)",
        ) from None


def job_digest(job_dir: Path) -> str:
    """The job dir's digest as the image's build writes it (docker/Dockerfile): sha256 of
    `sha256sum` over every file COPY job/ takes (caches out, as .dockerignore), sorted by
    path in byte order."""
    rels = []
    for root, dirs, files in os.walk(job_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rels += [
            "./" + os.path.relpath(os.path.join(root, f), job_dir)
            for f in files
            if not f.endswith(".pyc")
        ]
    listing = "".join(
        f"{hashlib.sha256((job_dir / r).read_bytes()).hexdigest()}  {r}\n"
        for r in sorted(rels, key=str.encode)
    )
    return hashlib.sha256(listing.encode()).hexdigest()


def path_on_nodes(endpoint: Endpoint, job_dir: Path) -> str | None:
    """Where the cluster's nodes already have this job dir, or None (it is uploaded)."""
    if endpoint.shares_disk:
        return str(job_dir.resolve())
    if endpoint.image_job and endpoint.image_job[1] == job_digest(job_dir):
        return endpoint.image_job[0]
    return None


# A user's working dir: only what is never code or data of theirs stays behind.
USER_EXCLUDES = [".git", "__pycache__", "*.pyc", ".pytest_cache", ".venv*", *SECRETS]


def working_dir_size(job_dir: Path, excludes: list[str] = EXCLUDES) -> int:
    total = 0
    for root, dirs, files in os.walk(job_dir):
        dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in excludes)]
        for f in files:
            if not any(fnmatch.fnmatch(f, p) for p in excludes):
                total += os.path.getsize(os.path.join(root, f))
    return total


# Ray's documented cap on a working_dir upload (the runtime-env docs: 500 MiB); the
# cluster's gRPC message size, where this process is told it, caps it too.
WORKING_DIR_LIMIT = 500 * 1024**2


def size_limit() -> int:
    return min(WORKING_DIR_LIMIT, int(os.environ.get("RAY_max_grpc_message_size", 2**62)))


def check_job_dir(job_dir: Path, limit: int | None = None, upload: bool = True) -> None:
    if not (job_dir / "tune_xgboost.py").is_file():
        raise UserError(
            f"job dir {job_dir} has no tune_xgboost.py",
            "point --job-dir (or RAYSCALE_JOB_DIR) at the kit's job/ folder",
        )
    if upload:
        check_size(job_dir, EXCLUDES, limit, "pass data by path or URL with --data")


def check_size(
    folder: Path, excludes: list[str], limit: int | None = None, data_hint: str = ""
) -> None:
    limit = limit or size_limit()
    size = working_dir_size(folder, excludes)
    if size >= limit:
        raise UserError(
            f"{folder} holds {size / 2**20:.0f} MiB, over Ray's working_dir limit of "
            f"{limit / 2**20:.0f} MiB",
            "move large files out of it" + (f" and {data_hint}" if data_hint else ""),
        )


def localise_paths(args: list[str]) -> list[str]:
    """Make --data / --search-space paths that exist here absolute.

    The job runs in a copy of job/ elsewhere on disk, so a relative path would point
    nowhere. On a remote cluster a local path means nothing at all: use a URL there.
    """

    def local(flag: str, cand: str) -> str:
        if ":" not in cand and (os.path.exists(cand) or flag == "--storage-path"):
            return os.path.abspath(os.path.expanduser(cand))
        return cand

    out = list(args)
    for i, a in enumerate(out):
        for flag in ("--data", "--search-space", "--storage-path"):
            if a == flag and i + 1 < len(out):
                out[i + 1] = local(flag, out[i + 1])
            elif a.startswith(flag + "="):
                out[i] = f"{flag}={local(flag, a.split('=', 1)[1])}"
    return out
