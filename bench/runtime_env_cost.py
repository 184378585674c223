"""What a runtime env costs a job on this machine: submit -> RUNNING, and how long two
fresh actors (Tune's trial processes are actors) take to answer, with no runtime env, with
a working_dir and with env_vars only; the three alternated, median of --repeats.

    .venv/bin/python -m bench.runtime_env_cost --out results/bench/runtime_env.json

Why the local provider submits the job by path with no runtime env (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

from bench import bench
from rayscale import jobs, report

# Run as the job's entrypoint: two one-CPU actors (one per worker), timed until both answer.
PROBE = """
import os, time, ray
ray.init(logging_level="WARNING")

@ray.remote(num_cpus=1)
class A:
    def pid(self):
        return os.getpid()

t = time.perf_counter()
actors = [A.remote() for _ in range(2)]
ray.get([a.pid.remote() for a in actors])
print("ACTORS_READY_S", round(time.perf_counter() - t, 3))
"""


def one(j: jobs.Jobs, entrypoint: str, runtime_env) -> tuple[float, float]:
    t0 = time.perf_counter()
    job_id = j._client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    while j.status(job_id) == "PENDING":
        time.sleep(0.01)
    running = time.perf_counter() - t0
    j.wait(job_id, timeout=300)
    logs = j.logs(job_id)
    ready = next(
        float(ln.split()[1]) for ln in logs.splitlines() if ln.startswith("ACTORS_READY_S")
    )
    return running, ready


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/runtime_env.json")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    got: dict = {}
    with bench.local_cluster("rayscale-renv-", memory_gib=1.5) as (j, work):
        (work / "probe.py").write_text(PROBE)
        kinds = {
            "none": None,
            "working_dir": {"working_dir": str(work), "excludes": ["state"]},
            "env_vars": {"env_vars": {"RAYSCALE_PROBE": "1"}},
        }
        got = {k: {"submit_to_running_s": [], "two_actors_ready_s": []} for k in kinds}
        entry = f"cd {shlex.quote(str(work))} && python probe.py"
        for i in range(a.repeats):
            for k, env in kinds.items():
                running, ready = one(j, entry, env)
                got[k]["submit_to_running_s"].append(round(running, 3))
                got[k]["two_actors_ready_s"].append(ready)
            report.say(f"  round {i + 1}/{a.repeats} done")
    out = {
        k: {m: {"median": statistics.median(v), "runs": v} for m, v in d.items()}
        for k, d in got.items()
    }
    result = {
        "command": "python -m bench.runtime_env_cost " + " ".join(argv or sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "repeats": a.repeats,
        "kinds": out,
    }
    report.save_measured(
        result,
        a.out,
        [
            f"{k:12s} submit->RUNNING {d['submit_to_running_s']['median']:.2f} s, "
            f"two fresh actors {d['two_actors_ready_s']['median']:.2f} s"
            for k, d in out.items()
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
