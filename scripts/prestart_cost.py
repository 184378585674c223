"""What starting the trial processes early buys: the bench's paired search (8 configs, 2
workers) as a cluster's first job (its trial processes asked for while the data loads,
job/prestart.py), as its second (on the processes the first left waiting), with
`--no-prestart`, and on a cluster whose worker nodes do not import Ray Tune into their
processes as they start (providers/base.py WORKER_ENV), taking turns, --repeats times.
Per run, when each process's first trial entered its trainable in the search window, and
the search's wall time; each first trial's way there, from Tune's controller to the
trainable, split by Ray's task events (read from the GCS: the lean head's dashboard does
not serve the state API).

    .venv/bin/python scripts/prestart_cost.py --out results/bench/prestart.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from pathlib import Path

from rayscale import bench, jobs, report
from rayscale.providers import local

ARGS = bench.PAIRED
# Per fresh cluster: its worker nodes' extra env, and the searches run on it, in order, with
# their flags. A job leaves trial processes for the next (job/prestart.py): `waiting` is the
# second job on its cluster, each other kind the first on its own.
CLUSTERS = {
    "preload": (local.WORKER_ENV, {"prestart": [], "waiting": []}),
    "no_prestart": (local.WORKER_ENV, {"no_prestart": ["--no-prestart"]}),
    "no_preload": ({}, {"prestart_no_preload": []}),
}
STEPS = (
    "controller_started_s",  # Tune's controller up
    "actor_submitted_s",  # the trial's placement group ready, its actor asked for
    "actor_running_s",  # the actor given a process
    "class_loaded_s",  # Tune's trainable class loaded there: its __init__ runs
    "actor_ready_s",  # Tune's on_trial_start
    "trainable_entered_s",
)
# Run on the cluster after its jobs: the trial actors' creation tasks, from the GCS.
EVENTS = """
import json, sys, ray
from ray._private import state
from ray.core.generated import common_pb2
ray.init(logging_level="WARNING")
out = {}
for e in state.state._get_all_task_events():
    if e.task_info.type != common_pb2.ACTOR_CREATION_TASK or not e.state_updates.worker_pid:
        continue
    s = {common_pb2.TaskStatus.Name(k): v / 1e9 for k, v in e.state_updates.state_ts_ns.items()}
    run = [p.start_time / 1e9 for p in e.profile_events.events if p.event_name == "task:execute"]
    out.setdefault(e.state_updates.worker_pid, {}).update(
        {"submitted": s.get("PENDING_ARGS_AVAIL"), "running": s.get("RUNNING")},
        **({"executed": min(run)} if run else {}),
    )
json.dump(out, open(sys.argv[1], "w"))
"""


def first_trace(rec: dict, events: dict | None = None) -> list[dict]:
    """Per trial process, its first trial's way into the search, s from the search's start:
    Tune's controller up, the trial's actor ready, the trainable entered; with EVENTS (the
    actor creation tasks by process), the steps between."""
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
            ev = (events or {}).get(str(t["pid"]), {})
            for step, key in (
                ("actor_submitted_s", "submitted"),
                ("actor_running_s", "running"),
                ("class_loaded_s", "executed"),
            ):
                if ev.get(key):
                    first[t["pid"]][step] = round(ev[key] - t0, 3)
    return sorted(first.values(), key=lambda x: x["trainable_entered_s"])


def task_events(j: jobs.Jobs, work: Path) -> dict:
    """The actor creation tasks the cluster's GCS holds, by process (EVENTS)."""
    script, out = work / "events.py", work / "events.json"
    script.write_text(EVENTS)
    job_id = j._client.submit_job(
        entrypoint=f"python {shlex.quote(str(script))} {shlex.quote(str(out))}"
    )
    if j.wait(job_id, timeout=120) != "SUCCEEDED":
        report.say(f"  task events not read: {j.logs(job_id)[-300:]}")
        return {}
    return json.loads(out.read_text())


def one_cluster(worker_env: dict, kinds: dict, i: int) -> dict:
    """Up a cluster whose workers have WORKER_ENV, run one search per kind, down it."""
    with bench.local_cluster("rayscale-prestart-", worker_env=worker_env) as (j, work):
        recs = {}
        for k, extra in kinds.items():
            args = [*ARGS, "--storage-path", str(work), "--name", f"{k}-{i}", *extra]
            job_id = j.submit(args)
            recs[k] = j.result(job_id, j.wait(job_id, timeout=600))
        events = task_events(j, work)
    return {
        k: {
            "first_trial_s": [x["trainable_entered_s"] for x in trace],
            "first_trial_trace": trace,
            "wall_s": round(rec["wall_s"], 3),
            "prestarted_workers": rec["prestarted_workers"],
            "waiting_workers": rec["waiting_workers"],
        }
        for k, rec in recs.items()
        for trace in [first_trace(rec, events)]
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/prestart.json")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    got: dict = {k: [] for _, kinds in CLUSTERS.values() for k in kinds}
    for i in range(a.repeats):
        for worker_env, kinds in CLUSTERS.values():
            for k, run in one_cluster(worker_env, kinds, i).items():
                got[k].append(run)
        report.say(f"  round {i + 1}/{a.repeats} done")
    out = {
        "command": f"python scripts/prestart_cost.py --out {a.out}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "job_args": ARGS,
        "worker_env": local.WORKER_ENV,
        "runs": got,
        "median_first_trial_s": {
            k: statistics.median(x for r in runs for x in r["first_trial_s"])
            for k, runs in got.items()
        },
        # Where the first trials' seconds went (medians over every process's first trial).
        "median_first_trial_trace": {
            k: {
                step: statistics.median(vals)
                for step in STEPS
                for vals in [[x[step] for r in runs for x in r["first_trial_trace"] if step in x]]
                if vals
            }
            for k, runs in got.items()
        },
        "median_wall_s": {
            k: statistics.median(r["wall_s"] for r in runs) for k, runs in got.items()
        },
    }
    trace = out["median_first_trial_trace"]
    report.save_measured(
        out,
        a.out,
        [
            f"{k:20} first trial {out['median_first_trial_s'][k]:.2f} s into the search: "
            + ", ".join(f"{s[:-2]} {trace[k][s]:.2f}" for s in STEPS if s in trace[k])
            + f"; wall {out['median_wall_s'][k]:.1f} s"
            for k in got
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
