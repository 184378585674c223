"""Runs on the cluster's head as a job: finds the Tune experiments a job wrote and prints
them as one JSON line, read through Tune's public ExperimentAnalysis.

Shipped by the launcher as this folder's working_dir, with job/tune_format.py beside it;
imports Ray and the standard library only (the head may have no rayscale). Usage:
  python read_tune.py --since EPOCH --until EPOCH [--path DIR_OR_URI ...] [--metric M --mode min|max]
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import math
import os
import sys

import tune_format  # job/tune_format.py, shipped beside this file (rayscale.tune_output)

MARKER = "RAYSCALE_TUNE "
# Tune's default storage_path when a script sets none (ray.tune.RunConfig's docs).
DEFAULT_ROOT = "~/ray_results"
# Files the bundled job writes beside Tune's output; any script may write them too.
EXTRAS_GLOB = "rayscale-*.json"


def is_uri(path: str) -> bool:
    return "://" in path


def _fs(uri: str):
    """(pyarrow filesystem, path in it): how Tune itself opens an s3:// or gs:// storage."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def _read_bytes(path: str) -> bytes:
    if not is_uri(path):
        with open(path, "rb") as f:
            return f.read()
    fs, where = _fs(path)
    with fs.open_input_stream(where) as f:
        return f.read()


def _listing(root: str, pattern: str, recursive: bool) -> list[tuple[float, str]]:
    """(mtime, path) of the files under root whose name matches pattern."""
    if not is_uri(root):
        base = os.path.expanduser(root)
        paths = glob.glob(
            os.path.join(base, "**", pattern) if recursive else os.path.join(base, pattern),
            recursive=recursive,
        )
        return [(os.path.getmtime(p), p) for p in paths]
    import pyarrow.fs

    fs, where = _fs(root)
    scheme = root.split("://", 1)[0]
    out = []
    for info in fs.get_file_info(
        pyarrow.fs.FileSelector(where, recursive=recursive, allow_not_found=True)
    ):
        if info.type == pyarrow.fs.FileType.File and fnmatch.fnmatch(info.base_name, pattern):
            out.append((info.mtime.timestamp() if info.mtime else 0.0, f"{scheme}://{info.path}"))
    return out


def tune_config(exp_dir: str) -> tuple[str | None, str | None]:
    """The metric and mode of the run's TuneConfig, from the file Tune saves beside its
    state (the one `Tuner.restore` reads); (None, None) where it cannot be read."""
    try:
        return tune_format.tune_config(_read_bytes(f"{exp_dir}/{tune_format.TUNER_FILE}"))
    except Exception:
        return None, None


def experiments(roots: list[str], since: float, until: float) -> list[str]:
    """Experiment dirs whose Tune state was written while the job ran, oldest first."""
    found = []
    for root in roots:
        for mtime, state in _listing(root, tune_format.STATE_GLOB, recursive=True):
            if since - 2 <= mtime <= until + 5:
                found.append((mtime, state.rsplit("/", 1)[0]))
    seen, out = set(), []
    for _, d in sorted(found):
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _num(v):
    return (
        v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
    )


def read(exp_dir: str, metric: str | None, mode: str | None) -> dict:
    saved_metric, saved_mode = tune_config(exp_dir)
    metric, mode = metric or saved_metric, mode or saved_mode
    analysis = tune_format.analysis(exp_dir)
    frames = analysis.trial_dataframes
    trials = []
    for t in analysis.trials:
        df = frames.get(t.trial_id)
        rows = []
        if df is not None and len(df):
            for r in df.to_dict("records"):
                rows.append(
                    [
                        _num(r.get("training_iteration")),
                        _num(r.get("timestamp")),
                        _num(r.get("time_total_s")),
                        _num(r.get(metric)) if metric else None,
                        r.get("node_ip"),
                        _num(r.get("pid")),
                    ]
                )
        try:  # what the trial asked of a node (a Trial's public, developer-level attribute)
            cpus = float(t.placement_group_factory.required_resources.get("CPU", 0.0))
        except Exception:
            cpus = None
        trials.append(
            {
                "trial_id": t.trial_id,
                "cpus": cpus,
                "status": t.status,
                "config": json.loads(json.dumps(t.config, default=str)),
                "rows": rows,
            }
        )
    extras = {}
    for _, path in sorted(_listing(exp_dir, EXTRAS_GLOB, recursive=False)):
        try:
            extras[path.rsplit("/", 1)[1]] = json.loads(_read_bytes(path))
        except (OSError, ValueError):
            pass
    return {"path": exp_dir, "metric": metric, "mode": mode, "trials": trials, "extras": extras}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--since", type=float, required=True)
    ap.add_argument("--until", type=float, required=True)
    ap.add_argument("--path", action="append", default=[])
    ap.add_argument("--metric")
    ap.add_argument("--mode", choices=["min", "max"])
    a = ap.parse_args()
    roots = a.path or [DEFAULT_ROOT]
    out = {
        "roots": [r if is_uri(r) else os.path.expanduser(r) for r in roots],
        "experiments": [],
        "warning": tune_format.check(),
    }
    for d in experiments(roots, a.since, a.until):
        out["experiments"].append(read(d, a.metric, a.mode))
    sys.stdout.write(MARKER + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
