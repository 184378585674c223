"""The study's baselines: the same configs without a cluster, on this machine (a plain
loop, joblib), and the short calibration the replay model reads when they are not run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rayscale import job_files, jobs
from rayscale.errors import UserError
from rayscale.study.plan import Progress
from rayscale.study.summary import baseline_summary


def run_baseline(
    kind: str, job_args: list[str], n_jobs: int, job_dir: Path, timeout: float | None
) -> dict:
    """The same configs without a cluster, on this machine: what a user would do instead."""
    args = [
        sys.executable,
        str(job_dir / "tune_xgboost.py"),
        *job_files.localise_paths(job_args),
        "--mode",
        kind,
        "--name",
        f"baseline-{kind}-{int(time.time())}",
    ]
    if kind == "joblib":
        args += ["--n-jobs", str(n_jobs)]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    try:
        rec = jobs.parse_result(
            f"baseline-{kind}", p.stdout + p.stderr, "SUCCEEDED" if p.returncode == 0 else "FAILED"
        )
    except UserError as e:
        raise UserError(f"the {kind} baseline failed: {e.problem}") from None
    out = {
        "wall_s": rec["wall_s"],
        "sum_train_s": rec["sum_train_s"],
        "sum_train_cpu_s": rec.get("sum_train_cpu_s"),
        "trials_completed": rec["trials_completed"],
        "best_metric": rec["best_valid_rmse"],
    }
    if kind == "joblib":
        out["n_jobs"] = n_jobs
    return out


def calibrate(progress: Progress, job_args: list[str], n_jobs: int, job_dir: Path, say) -> dict:
    """Trials at once on this machine, measured whatever --baselines says: the first
    2 x n_jobs configs in the plain loop and in joblib, in turns, as often as each point
    (the replay model needs the factor; the full baselines cost a whole search each)."""
    k = min(2 * n_jobs, int(jobs.flag_value(job_args, "--num-samples") or 16))
    args = [*job_args, "--num-samples", str(k)]
    for repeat in range(progress.plan.repeats):
        for kind in ("sequential", "joblib"):
            done = progress.baselines.setdefault(f"calibration-{kind}", [])
            if len(done) > repeat:
                continue
            say(
                f"  calibration: {kind} on the first {k} configs [{repeat + 1}/{progress.plan.repeats}] ..."
            )
            done.append(run_baseline(kind, args, n_jobs, job_dir, progress.plan.job_timeout))
            progress.save()
    return {
        "configs": k,
        **{
            kind: baseline_summary(progress.baselines[f"calibration-{kind}"])
            for kind in ("sequential", "joblib")
        },
    }
