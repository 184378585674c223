"""What a trial's checkpoints cost it: the standard search (make bench's, FIFO, 2 workers)
with the job's default `--checkpoint-min-s` (a checkpoint only once a trial has trained
that long since its last) and with `--checkpoint-min-s 0` (one at every
`--checkpoint-every` round), taking turns on one cluster, --repeats times. Per run: the
search's wall time, the overhead per trial ((wall x CPUs - train) / trials, as
`make bench`) and the checkpoints written.

    .venv/bin/python -m bench.checkpoint_cost --out results/bench/checkpoint.json
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench import bench
from rayscale import report
from rayscale.study import summary

WORKERS = 2
KINDS = {"default": [], "every_round": ["--checkpoint-min-s", "0"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/checkpoint.json")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    args = [*bench.STANDARD, "--scheduler", "fifo"]
    got: dict = {k: [] for k in KINDS}
    with bench.local_cluster("rayscale-ckpt-", WORKERS) as (j, work):
        for i in range(a.repeats):
            for k, extra in KINDS.items():
                name = f"{k}-{i}"
                job_id = j.submit([*args, "--storage-path", str(work), "--name", name, *extra])
                rec = j.result(job_id, j.wait(job_id, timeout=900))
                overhead = summary.overhead_per_trial(
                    rec["wall_s"], WORKERS, rec["sum_train_s"], len(rec["trials"])
                )
                got[k].append(
                    {
                        "wall_s": round(rec["wall_s"], 3),
                        "sum_train_s": round(rec["sum_train_s"], 3),
                        "overhead_per_trial_s": round(overhead, 4),
                        "checkpoints": len(list((work / name).glob("*/checkpoint_*"))),
                        # The cluster's first search has no trial processes waiting for it.
                        "waiting_workers": rec["waiting_workers"],
                    }
                )
            report.say(f"  round {i + 1}/{a.repeats} done")
    out = {
        "command": f"python -m bench.checkpoint_cost --out {a.out}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "job_args": args,
        "workers": WORKERS,
        "runs": got,
        "median_overhead_per_trial_s": {
            k: statistics.median(r["overhead_per_trial_s"] for r in runs) for k, runs in got.items()
        },
        "median_wall_s": {
            k: statistics.median(r["wall_s"] for r in runs) for k, runs in got.items()
        },
    }
    report.save_measured(
        out,
        a.out,
        [
            f"{k:12} overhead/trial {out['median_overhead_per_trial_s'][k]:.3f} s, wall "
            f"{out['median_wall_s'][k]:.1f} s, checkpoints {[r['checkpoints'] for r in runs]}"
            for k, runs in got.items()
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
