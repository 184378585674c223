"""Runs on the cluster's head as a job: writes a Tune experiment's files into its own log, in
base64 lines, for `rayscale job results --download` to write on the user's machine. Every
file of the experiment goes (each trial's result rows and params, Tune's state, the rayscale
records) but checkpoints, of which only the best trial's best checkpoint goes.

Shipped with read_tune.py and tune_format.py as one folder, the job's working_dir; imports
Ray, pyarrow and the standard library only. Usage:
  python pack.py EXP_DIR_OR_URI [--metric M --mode min|max]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys

import read_tune
import tune_format

PLAN, FILE, DATA, DONE = "RAYSCALE_PACK ", "RAYSCALE_FILE ", "RAYSCALE_DATA ", "RAYSCALE_DONE "
CHUNK = 48 * 1024  # 64 KiB of base64 a line


def listing(exp_dir: str) -> list[tuple[str, int]]:
    """(path relative to the experiment, size) of every file under it."""
    if not read_tune.is_uri(exp_dir):
        root = os.path.expanduser(exp_dir)
        out = []
        for d, _, names in os.walk(root):
            for n in names:
                p = os.path.join(d, n)
                out.append((os.path.relpath(p, root), os.path.getsize(p)))
        return sorted(out)
    import pyarrow.fs

    fs, where = read_tune._fs(exp_dir)
    sel = pyarrow.fs.FileSelector(where, recursive=True)
    return sorted(
        (i.path[len(where) :].lstrip("/"), i.size)
        for i in fs.get_file_info(sel)
        if i.type == pyarrow.fs.FileType.File
    )


def in_checkpoint(rel: str) -> bool:
    return any(part.startswith(tune_format.CHECKPOINT_PREFIX) for part in rel.split("/")[:-1])


def best_checkpoint(exp_dir: str, metric: str | None, mode: str | None) -> str | None:
    """The best trial's best checkpoint, relative to the experiment (Tune's own choice, by
    the run's metric and mode); None where the run kept none or names no metric."""
    saved_metric, saved_mode = read_tune.tune_config(exp_dir)
    metric, mode = metric or saved_metric, mode or saved_mode
    if not metric or mode not in ("min", "max"):
        return None
    analysis = tune_format.analysis(exp_dir)
    trial = analysis.get_best_trial(metric, mode, scope="last")  # as the record names it
    checkpoint = analysis.get_best_checkpoint(trial, metric, mode) if trial else None
    if checkpoint is None:
        return None
    root = read_tune._fs(exp_dir)[1] if read_tune.is_uri(exp_dir) else os.path.expanduser(exp_dir)
    return os.path.relpath(checkpoint.path, root)


def _open(exp_dir: str, rel: str):
    if not read_tune.is_uri(exp_dir):
        return open(os.path.join(os.path.expanduser(exp_dir), rel), "rb")
    fs, where = read_tune._fs(exp_dir)
    return fs.open_input_stream(f"{where}/{rel}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("exp_dir")
    ap.add_argument("--metric")
    ap.add_argument("--mode", choices=["min", "max"])
    a = ap.parse_args()
    files = listing(a.exp_dir)
    if not files:
        sys.exit(f"no files under {a.exp_dir}")
    best = best_checkpoint(a.exp_dir, a.metric, a.mode)
    keep = [(r, n) for r, n in files if not in_checkpoint(r) or (best and r.startswith(best + "/"))]
    out = sys.stdout
    plan = {
        "path": a.exp_dir,
        "files": len(keep),
        "bytes": sum(n for _, n in keep),
        "best_checkpoint": best,
        "checkpoint_files_left": len(files) - len(keep),
    }
    out.write(PLAN + json.dumps(plan) + "\n")
    for rel, size in keep:
        out.write(FILE + json.dumps({"path": rel, "size": size}) + "\n")
        digest = hashlib.sha256()
        with _open(a.exp_dir, rel) as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                out.write(DATA + base64.b64encode(chunk).decode() + "\n")
        out.write(DONE + json.dumps({"path": rel, "sha256": digest.hexdigest()}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
