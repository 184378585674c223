"""The Job API under load: N small jobs submitted by C clients at once (each client its own
connection, one job in flight at a time), each job with its own name, seed and data. Every
job must end SUCCEEDED or FAILED with its own line, each result must be its own, nothing is
lost; the head's memory (its whole process tree: GCS, dashboard, job supervisors and the
drivers, which run on the head) is sampled throughout, and `job list` is timed at the end.

    python -m bench.load --jobs 100 --clients 4 --out results/reliability/load.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rayscale import jobs, procs
from rayscale.errors import UserError
from rayscale.providers.base import GIB

# A job that starts a search and finishes in seconds: the load is the jobs, not the trials.
SMALL = ["--mode", "sequential", "--num-samples", "2", "--max-rounds", "5"]


def _args(i: int, storage: Path) -> list[str]:
    return [*SMALL, "--data", f"synthetic:rows=300,features=4,seed={i}", "--seed", str(i),
            "--name", f"load-{i}", "--storage-path", str(storage)]  # fmt: skip


class RssSampler(threading.Thread):
    def __init__(self, pids: list[int], interval: float = 0.5):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append(procs.rss_bytes(self.pids))
            if self.stop.wait(self.interval):
                return


def run(
    endpoint: jobs.Endpoint,
    head_pids: list[int],
    n_jobs: int,
    clients: int,
    storage: Path,
    say: Callable[[str], None] = lambda line: None,
) -> dict:
    """Submit n_jobs from `clients` threads; returns the figures and each job's outcome."""
    sampler = RssSampler(head_pids)
    sampler.start()
    time.sleep(1.0)  # a first sample of the idle head
    start_rss = sampler.samples[0]
    outcomes: dict[int, dict] = {}

    def client(share: list[int]) -> None:
        j = jobs.Jobs(endpoint)  # each client its own connection
        for i in share:
            t0 = time.perf_counter()
            out: dict = {"job": i}
            try:
                job_id = j.submit(_args(i, storage))
                out["job_id"] = job_id
                out["status"] = j.wait(job_id, timeout=600)
                rec = j.result(job_id, out["status"])
                # Its own result: the name, seed and data this client asked for.
                out["own"] = rec["name"] == f"load-{i}" and rec["data"].endswith(f"seed={i}")
            except UserError as e:
                out["error"] = e.line()
            out["s"] = round(time.perf_counter() - t0, 2)
            outcomes[i] = out
            if len(outcomes) % 10 == 0 or len(outcomes) == n_jobs:
                say(f"  {len(outcomes)}/{n_jobs} jobs ended")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as ex:
        list(ex.map(client, [list(range(c, n_jobs, clients)) for c in range(clients)]))
    wall = time.perf_counter() - t0
    j = jobs.Jobs(endpoint)
    list_s = []
    for _ in range(3):
        t = time.perf_counter()
        listed = {r.submission_id: r.status for r in j.list()}
        list_s.append(time.perf_counter() - t)
    time.sleep(2.0)  # the last drivers exit
    sampler.stop.set()
    sampler.join()
    rows = [outcomes[i] for i in sorted(outcomes)]
    ok = [r for r in rows if r.get("status") == "SUCCEEDED" and r.get("own")]
    # Lost: no outcome, not listed, or a result that is not the job's own.
    lost = [
        r
        for r in rows
        if "job_id" not in r
        or listed.get(r["job_id"]) is None
        or (r.get("status") == "SUCCEEDED" and not r.get("own"))
    ]
    return {
        "jobs": n_jobs,
        "clients": clients,
        "succeeded": len(ok),
        "failed": sum(1 for r in rows if r.get("status") != "SUCCEEDED"),
        "lost": len(lost) + (n_jobs - len(rows)),
        "wall_s": round(wall, 1),
        "job_s_median": round(statistics.median(r["s"] for r in rows), 2),
        "head_rss_start_gib": round(start_rss / GIB, 3),
        "head_rss_peak_gib": round(max(sampler.samples) / GIB, 3),
        "head_rss_end_gib": round(sampler.samples[-1] / GIB, 3),
        "job_list_s": round(statistics.median(list_s), 3),
        "jobs_listed": len(listed),
        "outcomes": rows,
    }


def main() -> None:
    from rayscale import report
    from rayscale.providers.base import NodeShape
    from rayscale.providers.local import LocalProvider
    from rayscale.state import StateDir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="results/reliability/load.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rayscale-load-") as d:
        state = StateDir(Path(d))
        p = LocalProvider(state, NodeShape.sized(1, 1.5))
        with state.lock():
            p.up(a.workers)
        try:
            report.say(f"{a.jobs} jobs from {a.clients} clients on {a.workers} workers ...")
            figures = run(
                p.endpoint(), p.head_pids(), a.jobs, a.clients, Path(d) / "results", report.say
            )
        finally:
            with state.lock():
                p.down()
    figures = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "workers": a.workers, **figures}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "outcomes"}, indent=2))
    raise SystemExit(1 if figures["lost"] else 0)


if __name__ == "__main__":
    main()
