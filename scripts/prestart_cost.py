"""What starting the trial processes while the data loads (job/prestart.py) buys: the
bench's paired search (8 configs, 2 workers) with and without `--no-prestart`,
alternated, --repeats times; per run, when the first trial entered its trainable in the
search window (per slot) and the search's wall time.

    .venv/bin/python scripts/prestart_cost.py --out results/bench/prestart.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from rayscale import bench, jobs, report
from rayscale.providers.base import NodeShape
from rayscale.providers.local import LocalProvider
from rayscale.state import StateDir

ARGS = bench.PAIRED


def first_trace(rec: dict) -> list[dict]:
    """Per trial process, its first trial's way into the search, s from the search's start:
    Tune's controller up, the trial's actor ready, the trainable entered."""
    t0 = rec["search_window"][0]
    first: dict = {}
    for t in rec["trials"]:
        entered = t["started_at"] - (t.get("setup_s") or 0.0) - t0
        if t["pid"] not in first or entered < first[t["pid"]]["trainable_entered_s"]:
            first[t["pid"]] = {
                "controller_started_s": round(rec["controller_started_at"] - t0, 3),
                "actor_ready_s": round(t["actor_ready_at"] - t0, 3),
                "trainable_entered_s": round(entered, 3),
            }
    return sorted(first.values(), key=lambda x: x["trainable_entered_s"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/prestart.json")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rayscale-prestart-"))
    state = StateDir(str(work / "state"))
    p = LocalProvider(state, NodeShape.sized(1, 2.0))
    kinds = {"prestart": [], "no_prestart": ["--no-prestart"]}
    got: dict = {k: [] for k in kinds}
    with state.lock():
        p.up(2)
    try:
        j = jobs.Jobs(p.endpoint())
        for i in range(a.repeats):
            for k, extra in kinds.items():
                args = [*ARGS, "--storage-path", str(work), "--name", f"{k}-{i}", *extra]
                job_id = j.submit(args)
                rec = j.result(job_id, j.wait(job_id, timeout=600))
                trace = first_trace(rec)
                got[k].append(
                    {
                        "first_trial_s": [x["trainable_entered_s"] for x in trace],
                        "first_trial_trace": trace,
                        "wall_s": round(rec["wall_s"], 3),
                        "prestarted_workers": rec["prestarted_workers"],
                    }
                )
            report.say(f"  round {i + 1}/{a.repeats} done")
    finally:
        with state.lock():
            p.down()
        shutil.rmtree(work, ignore_errors=True)
    out = {
        "command": f"python scripts/prestart_cost.py --out {a.out}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "job_args": ARGS,
        "runs": got,
        "median_first_trial_s": {
            k: statistics.median(x for r in runs for x in r["first_trial_s"])
            for k, runs in got.items()
        },
        # Where the first trials' seconds went (medians over every process's first trial).
        "median_first_trial_trace": {
            k: {
                step: statistics.median(x[step] for r in runs for x in r["first_trial_trace"])
                for step in ("controller_started_s", "actor_ready_s", "trainable_entered_s")
            }
            for k, runs in got.items()
        },
        "median_wall_s": {
            k: statistics.median(r["wall_s"] for r in runs) for k, runs in got.items()
        },
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    for k in kinds:
        tr = out["median_first_trial_trace"][k]
        report.say(
            f"{k:12} first trial {out['median_first_trial_s'][k]:.2f} s into the search "
            f"(Tune's controller up {tr['controller_started_s']:.2f} s, actor ready "
            f"{tr['actor_ready_s']:.2f} s), wall {out['median_wall_s'][k]:.1f} s"
        )
    report.say(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
