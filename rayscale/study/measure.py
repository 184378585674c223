"""One point of a study: resize to n workers, run the workload, and read what it did (its
Tune output, the nodes' CPU, the workers lost and replaced on the way)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
from collections.abc import Callable

import psutil

from rayscale import jobs
from rayscale.errors import UserError
from rayscale.providers.base import Provider
from rayscale.study.workload import Workload


class CpuSampler:
    """Samples each node's CPU time once a second while a run is in flight.

    Busy cores of a node = CPU seconds its processes used / wall seconds. Processes that
    exit between samples keep what they had used up to their last sample.
    """

    def __init__(self, provider: Provider, interval: float = 1.0):
        self.provider, self.interval = provider, interval
        self._last: dict[tuple[str, int], float] = {}
        self.used: dict[str, float] = {}
        self.series: dict[int, list[tuple[float, float]]] = {}  # head pid: (epoch, CPU s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        now = time.time()
        for node, per_pid in self.provider.node_cpu_seconds().items():
            for pid, secs in per_pid.items():
                if node == "head":
                    self.series.setdefault(pid, []).append((now, secs))
                prev = self._last.get((node, pid))
                if prev is not None and secs >= prev:
                    self.used[node] = self.used.get(node, 0.0) + secs - prev
                self._last[(node, pid)] = secs

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        self.wall = time.perf_counter() - self.t0

    def busy(self) -> dict[str, float]:
        return {node: round(used / self.wall, 3) for node, used in sorted(self.used.items())}

    def between(self, pid: int, t0: float, t1: float) -> float | None:
        """CPU seconds a head process used from epoch t0 to t1 (linear between samples);
        None where its samples do not cover that span."""
        pts = self.series.get(pid) or []
        if len(pts) < 2 or pts[0][0] > t0 + self.interval or pts[-1][0] < t1 - self.interval:
            return None

        def at(t: float) -> float:
            for (a, x), (b, y) in zip(pts, pts[1:], strict=False):
                if t <= b:
                    return x + (y - x) * min(1.0, max(0.0, (t - a) / (b - a or 1)))
            return pts[-1][1]

        return max(0.0, at(t1) - at(t0))


def driver_load(cpu: CpuSampler, info, window: tuple[float, float], exp) -> dict:
    """The Tune driver's work in the search window: trials started and results handled
    (each a round trip through it), and the CPU its process spent on them, read by the pid
    the Job API names (providers that see their nodes' processes: local)."""
    events = len(exp.trials) + sum(t.iterations for t in exp.trials)
    span = window[1] - window[0]
    out: dict = {"events": events, "events_per_s": round(events / span, 2) if span > 0 else None}
    pid = getattr(getattr(info, "driver_info", None), "pid", None)
    used = cpu.between(int(pid), *window) if pid and span > 0 else None
    if used is not None:
        out.update(
            cpu_s=round(used, 3),
            cpu_s_per_event=round(used / events, 5),
            cpu_cores=round(used / span, 3),
        )
    return out


class Keeper:
    """Keeps a run's n workers while its job is in flight, as an autoscaler would: a worker
    lost (preempted, killed) is replaced through `provider.scale(n)`. What it saw tells a
    disturbed run: the distinct workers that served it beyond n were replacements."""

    def __init__(self, provider: Provider, n: int, interval: float = 3.0):
        self.provider, self.n, self.interval = provider, n, interval
        self.workers: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _look(self) -> int:
        st = self.provider.status()
        alive = [n.address for n in st.nodes if n.role == "worker" and n.state == "alive"]
        self.workers |= set(alive)
        return len(alive)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(UserError):  # tried again on the next beat
                if self._look() < self.n:
                    scale(self.provider, self.n)
                    self._look()

    @property
    def replaced(self) -> int:
        return max(0, len(self.workers) - self.n)

    def __enter__(self):
        with contextlib.suppress(UserError):
            self._look()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def disturbance(retries: int, replaced: int) -> list[str]:
    """Why a run's time is not a clean measurement: retried trials, replaced workers."""
    out = []
    if retries:
        out.append(f"{retries} trial retries")
    if replaced:
        out.append(f"{replaced} workers lost and replaced")
    return out


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def scale(provider: Provider, n: int) -> None:
    """provider.scale under the state dir's lock, as `cluster scale` takes it: a study's
    resize never runs beside a user's `cluster scale` or `down`."""
    with provider.state.lock():
        provider.scale(n)


def resize(provider: Provider, n: int) -> dict:
    """Scale to n workers: from how many, and in how many seconds (what adding nodes costs
    on this provider, which `rayscale plan` reports)."""
    before = provider.status().alive_workers
    t0 = time.perf_counter()
    for attempt in range(3):  # a worker lost while resizing is replaced by the next try
        try:
            scale(provider, n)
            break
        except UserError:
            if attempt == 2:
                raise
    return {"from": before, "s": round(time.perf_counter() - t0, 3)}


def configs_digest(configs: list[dict]) -> str:
    """The same digest for the same set of trial configs, in whatever order they ran."""
    import hashlib

    rows = sorted(json.dumps(c, sort_keys=True, default=str) for c in configs)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def run_point(
    provider: Provider,
    j: jobs.Jobs,
    n: int,
    repeat: int,
    work: Workload,
    timeout: float | None,
    say: Callable[[str], None],
) -> dict:
    """One run of the workload at n workers, read from its Tune output on the head: the
    times, the trials and the best value, with the cores each node kept busy."""
    resized = resize(provider, n)
    submitted, submitted_at = time.perf_counter(), time.time()
    with CpuSampler(provider) as cpu, Keeper(provider, n) as keeper:
        job_id = work.submit(j, n, repeat)
        status = wait_or_stop(j, job_id, timeout)
    # The whole job as its user waits for it: submission, driver start-up, data, search, end.
    submit_to_result = time.perf_counter() - submitted
    if status != "SUCCEEDED":
        work.failed(j, job_id, status)  # raises the job's own error
    info = j.info(job_id)
    got = work.read(j, job_id, info, provider, submitted_at)
    exp = got.exp
    busy = cpu.busy()
    workers_busy = [v for k, v in busy.items() if k != "head"]
    row = {
        "workers": n,
        "repeat": repeat,
        "job_id": job_id,
        "cpus": got.cpus,
        "trials_completed": sum(1 for t in exp.trials if t.status == "TERMINATED"),
        "trials": len(exp.trials),
        "trials_errored": sum(1 for t in exp.trials if t.status == "ERROR"),
        "best_metric": exp.best(),
        "cpu_busy_avg": (
            round(sum(workers_busy) / got.cpus, 3) if workers_busy and got.cpus else None
        ),
        "cpu_busy_by_node": busy,
        "job_total_s": got.job_total_s,
        "submit_to_result_s": round(submit_to_result, 3),
        "timeline": got.timeline,
        "experiment": exp.path,
        "metric": exp.metric,
        "mode": exp.mode,
        "configs": configs_digest([t.config for t in exp.trials]),
        "retries": got.retries,
        "workers_replaced": keeper.replaced,
        "driver": driver_load(cpu, info, got.window, exp),
        "resize": resized,
        **got.row,
    }
    row["disturbed_by"] = disturbance(row["retries"], keeper.replaced)
    best = row["best_metric"]
    name = work.metric([row])["name"]
    say(
        f"  workers={n} repeat={repeat}: search {row['wall_s']:.1f} s, "
        f"{row['trials_completed']}/{row['trials']} trials"
        + (f", best {name} {best:.4g}" if best is not None else "")
        + f", cores busy {busy}"
        + (f"; DISTURBED: {', '.join(row['disturbed_by'])}" if row["disturbed_by"] else "")
    )
    return row


def wait_or_stop(j: jobs.Jobs, job_id: str, timeout: float | None) -> str:
    """The job's end status; interrupted, the job is stopped first: it must not go on
    using a cluster the study leaves up."""
    try:
        return j.wait(job_id, timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            j.stop(job_id)
        raise
