"""Where `cluster up`'s time goes (#13, head_plus_2_ready_s): a local head and two one-CPU
workers brought up and taken down REPEATS times. Every process of the cluster is sampled
(psutil, every 0.25 s, by role; bench/cpu_profile.py's sampler) from the call to `up`
until it returns, and the machine's busy CPU time is read from /proc/stat over the same
window: where the cores are busy for the whole of it, `up` is bound by the CPU work of
starting the cluster's processes, and the roles say whose. Writes
results/bench/startup_profile.json:

    python -m bench.startup_profile --out results/bench/startup_profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from bench.cpu_profile import Sampler, largest_first
from rayscale.providers.base import NodeShape
from rayscale.providers.local import LocalProvider
from rayscale.state import StateDir

# What each process of a starting cluster is, by its command line (first match).
ROLES = [
    ("ray start, one per node", ("bin/ray start", "scripts.py start")),
    ("dashboard agent, one per node", ("ray::DashboardAgent", "dashboard/agent.py")),
    ("runtime env agent, one per node", ("ray::RuntimeEnvAgent", "runtime_env/agent")),
    ("dashboard and its module processes (head)", ("dashboard", "multiprocessing")),
    ("autoscaler monitor (head)", ("monitor.py",)),
]
NATIVE = {"raylet": "raylets (C++)", "gcs_server": "gcs_server (C++)"}


def node_role(p: psutil.Process) -> str:
    if p.pid == os.getpid():
        return "launcher"  # measured apart
    try:
        name, cmd = p.name(), " ".join(p.cmdline())
    except psutil.Error:
        return "gone"
    if name in NATIVE:  # their command lines name the agents they start
        return NATIVE[name]
    return next((r for r, keys in ROLES if any(k in cmd for k in keys)), "other")


def busy_seconds() -> tuple[float, float]:
    """The machine's busy and stolen CPU seconds since boot, all cores."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
    return busy, getattr(t, "steal", 0.0)


def one(workers: int) -> dict:
    me = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="rayscale-startup-") as tmp:
        state = StateDir(tmp)
        p = LocalProvider(state, NodeShape.sized(1, 2.0))
        # Every process under this one: the nodes are started as its children.
        sampler = Sampler([me.pid], 0.25, node_role)
        sampler.start()
        me0 = me.cpu_times()
        b0, s0 = busy_seconds()
        t0, w0 = time.time(), time.perf_counter()
        with state.lock():
            p.up(workers)
        wall = time.perf_counter() - w0
        b1, s1 = busy_seconds()
        time.sleep(sampler.interval)  # one more sample of every process, after up returned
        sampler.stop.set()
        sampler.join()
        me1 = me.cpu_times()
        with state.lock():
            p.down()
    by_role = sampler.in_window(t0, t0 + wall + sampler.interval)
    by_role.pop("launcher", None)
    cores = psutil.cpu_count()
    return {
        "wall_s": round(wall, 2),
        "machine_busy_cpu_s": round(b1 - b0, 2),
        "machine_busy_fraction": round((b1 - b0) / (wall * cores), 3),
        "steal_cpu_s": round(s1 - s0, 2),
        "cluster_cpu_s_by_role": largest_first(by_role),
        "launcher_cpu_s": round(me1.user + me1.system - me0.user - me0.system, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/startup_profile.json")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    runs = []
    for i in range(a.repeats):
        runs.append(one(a.workers))
        print(f"  up {i + 1}/{a.repeats}: {runs[-1]['wall_s']} s", flush=True)
    doc = {
        "command": f"python -m bench.startup_profile --out {a.out}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cores": psutil.cpu_count(),
        "workers": a.workers,
        "runs": runs,
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "median_busy_fraction": statistics.median(r["machine_busy_fraction"] for r in runs),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(
        f"up {doc['median_wall_s']} s (median), cores busy {doc['median_busy_fraction']:.0%}; "
        f"wrote {a.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
