"""Where the CPU goes during a search (#13): the standard search (make bench's, FIFO and
ASHA) on a local cluster of a head and one-CPU workers. Every process of the cluster is
sampled (psutil) through the search window and its CPU time put to a role: the trials, the
Tune driver, the job supervisor, the raylets, the GCS, the dashboard and agents, idle
workers. py-spy samples the driver's Python stacks, so the driver's share splits into what
Tune does with it. Writes results/bench/cpu_profile.json:

    python -m bench.cpu_profile --workers 2 --out results/bench/cpu_profile.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench import bench
from rayscale import procs

CLI = str(Path(sys.executable).parent / "rayscale")
PY_SPY = str(Path(sys.executable).parent / "py-spy")

# What the driver does during the search (inside Tuner.fit), most specific first; the rest
# of its life (imports, data, Ray's start, the final fit) apart.
DRIVER_BUCKETS = [
    ("usage tagging (imports Tune's logger integrations)", ("tag_callbacks",)),
    ("checkpoint / experiment state", ("experiment_state.py", "save_to_dir")),
    ("loggers (json, csv, tensorboard)", ("tune/logger/",)),
    ("our callbacks", ("on_trial_complete (progress", "check_storage", "emit (protocol")),
    ("result handling", ("_on_training_result", "_process_trial_result", "on_trial_result")),
    ("scheduling, actors", ("_maybe_update_trial_queue", "_schedule_trial", "actor_manager")),
    ("ray core (gRPC, object refs)", ("ray/_private/", "_raylet", "ray/actor.py")),
    ("tune, other", ("ray/tune/", "ray/air/", "ray/train/")),
]
IN_SEARCH = "Tuner.fit (ray/tune/tuner.py"
PROFILER = "the profiler (this script, py-spy)"  # its own CPU, outside the cluster


def role(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())
        name = p.name()
    except psutil.Error:
        return "gone"
    if "tune_xgboost.py" in cmd:
        return "driver"
    if cmd.startswith("ray::"):
        # Ray names its agents' processes as it names workers (ray::DashboardAgent).
        for key, r in (("JobSupervisor", "job supervisor"), ("IDLE", "idle workers"),
                       ("Agent", "dashboard and agents")):  # fmt: skip
            if key in cmd:
                return r
        return "trials and tasks"
    if name == "raylet":
        return "raylets"
    if name == "gcs_server":
        return "gcs"
    if any(k in cmd for k in ("dashboard", "agent", "log_monitor", "monitor.py")):
        return "dashboard and agents"
    return "other"


class Sampler(threading.Thread):
    """CPU seconds (user + system) of every process under the roots, every interval."""

    def __init__(self, roots: list[int], interval: float = 0.5, role=role):
        super().__init__(daemon=True)
        self.roots, self.interval, self.role = roots, interval, role
        # Processes outside the cluster that this run starts, by role: the profiler's own
        # (this script, py-spy) and the CLI following the job.
        self.extra: dict[int, str] = {os.getpid(): PROFILER}
        self.samples: list[tuple[float, int, str, float]] = []
        # The whole machine's (busy, steal) CPU seconds: what runs outside the cluster (this
        # script, the CLI following the job, the VM's own) and what its host took from it.
        self.machine: list[tuple[float, float, float]] = []
        self.roles: dict[int, str] = {}
        # The driver's and the job supervisor's threads: which of their loops takes the CPU.
        self.threads: list[tuple[float, int, str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            self.machine.append((now, *machine_cpu_s()))
            for pid in [*procs.tree(self.roots), *self.extra]:
                try:
                    p = psutil.Process(pid)
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                # A worker changes role (IDLE -> a trial): its last named role wins.
                r = self.extra.get(pid) or self.role(p)
                if r not in ("gone", "idle workers") or pid not in self.roles:
                    self.roles[pid] = r
                self.samples.append((now, pid, r, t.user + t.system))
                if self.roles[pid] in THREADED:
                    for tid, name, cpu in threads_of(p):
                        self.threads.append((now, tid, f"{self.roles[pid]}: {name}", cpu))
            self.stop.wait(self.interval)

    def in_window(self, start: float, end: float) -> dict[str, float]:
        out = spent(self.samples, start, end, lambda pid, r: self.roles.get(pid, "other"))
        inside = [m for m in self.machine if start < m[0] <= end]
        before = [m for m in self.machine if m[0] <= start]
        if inside and before:
            (t0, busy0, steal0), (t1, busy1, steal1) = before[-1], inside[-1]
            # The rest of the machine: kernel threads, the VM's agents, other work.
            out["outside the cluster, other"] = max(0.0, busy1 - busy0 - sum(out.values()))
            out["stolen by the VM's host"] = steal1 - steal0
            out["idle"] = max(0.0, (os.cpu_count() or 1) * (t1 - t0) - (busy1 - busy0)
                              - (steal1 - steal0))  # fmt: skip
        return dict(out)

    def threads_in_window(self, start: float, end: float) -> dict[str, float]:
        return dict(spent(self.threads, start, end, lambda tid, name: name))


def spent(samples, start: float, end: float, key) -> dict[str, float]:
    """CPU seconds inside (start, end] of each sampled id's (process, thread) cumulative
    clock, summed by key(id, label)."""
    first: dict[int, float] = {}
    last: dict[int, tuple[str, float]] = {}
    for t, i, label, cpu in samples:
        if t <= start:
            first[i] = cpu
        elif t <= end:
            first.setdefault(i, 0.0)  # started inside the window: all of it counts
            last[i] = (label, cpu)
    out: dict[str, float] = collections.defaultdict(float)
    for i, (label, cpu) in last.items():
        out[key(i, label)] += cpu - first[i]
    return out


THREADED = ("driver", "job supervisor")


def largest_first(d: dict, per: float = 1.0, digits: int = 2, least: float = 0.0) -> dict:
    """d's values over `per`, rounded, largest first; those under `least` left out. Counts
    (ints, per 1, 0 digits) stay ints."""
    return {
        k: round(v if per == 1 else v / per, digits)
        for k, v in sorted(d.items(), key=lambda kv: -kv[1])
        if v >= least
    }


def threads_of(p: psutil.Process) -> list[tuple[int, str, float]]:
    """(thread id, name, CPU seconds) of each of p's threads; its first thread is "main"
    (Python's, where Tune's controller and Ray's task loop run)."""
    out = []
    try:
        for th in p.threads():
            try:
                name = Path(f"/proc/{p.pid}/task/{th.id}/comm").read_text().strip()
            except OSError:
                continue
            out.append((th.id, "main" if th.id == p.pid else name, th.user_time + th.system_time))
    except psutil.Error:
        pass
    return out


def machine_cpu_s() -> tuple[float, float]:
    """The machine's busy CPU seconds (user, nice, system, irq, softirq) and steal."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return sum(fields[i] for i in (0, 1, 2, 5, 6)) / hz, fields[7] / hz


def driver_pid(roots: list[int], name: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in procs.tree(roots):
            try:
                cmd = psutil.Process(pid).cmdline()
            except psutil.Error:
                continue
            if any("tune_xgboost.py" in c for c in cmd) and name in cmd:
                return pid
        time.sleep(0.2)
    raise SystemExit("the job's driver did not start")


def buckets(raw: str) -> dict[str, int]:
    """py-spy's raw (collapsed) stacks -> samples per bucket: outside the search, or in it
    by the first bucket (the list's order) that a frame of the stack names."""
    out: dict[str, int] = collections.Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        if IN_SEARCH not in stack:
            out["outside the search (imports, data, Ray's start, the final fit)"] += int(n)
            continue
        hit = next(
            (b for b, keys in DRIVER_BUCKETS if any(k in stack for k in keys)),
            "in the search, other",
        )
        out[hit] += int(n)
    return dict(out)


def one(state: Path, roots: list[int], scheduler: str, out_dir: Path, rate: int) -> dict:
    name = f"profile-{scheduler}"
    args = [*bench.STANDARD, "--scheduler", scheduler, "--name", name,
            "--storage-path", str(state.parent / "results")]  # fmt: skip
    sampler = Sampler(roots)
    sampler.start()
    job = subprocess.Popen([CLI, "job", "submit", "--json", "--", *args], stdout=subprocess.PIPE,
                           text=True, env={**os.environ, "RAYSCALE_STATE_DIR": str(state)})  # fmt: skip
    sampler.extra[job.pid] = "the CLI following the job"
    pid = driver_pid(roots, name)
    raw = out_dir / f"cpu_profile-driver-{scheduler}.txt"  # kept beside the JSON
    spy = subprocess.Popen([PY_SPY, "record", "--pid", str(pid), "--rate", str(rate), "--format",
                            "raw", "--output", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    sampler.extra[spy.pid] = PROFILER
    out, _ = job.communicate(timeout=1800)
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)
    sampler.stop.set()
    sampler.join()
    record = json.loads(out)
    start, end = record["search_window"]
    window = end - start
    cpu = sampler.in_window(start, end)
    spy_samples = buckets(raw.read_text()) if raw.exists() else {}
    total = sum(spy_samples.values())
    first_trial = min(t["started_at"] for t in record["trials"] if t.get("started_at"))
    return {
        "scheduler": scheduler,
        "search_window_s": round(window, 2),
        "sum_train_s": record["sum_train_s"],
        "first_trial_started_s": round(first_trial - start, 2),
        "cpu_s_by_role": largest_first(cpu),
        "cores_by_role": largest_first(cpu, per=window, digits=3),
        "threads_cpu_s": largest_first(sampler.threads_in_window(start, end), least=0.01),
        "driver_py_spy_rate_hz": rate,
        "driver_py_spy_samples": total,
        "driver_samples_by_bucket": largest_first(spy_samples, digits=0),
    }


def idle_window(roots: list[int], seconds: float) -> dict:
    """The same roles with no job on the cluster: what joblib's trials share the cores with
    (the baselines run beside the idle cluster), to set against the search's."""
    time.sleep(10)  # the nodes' start-up settles
    sampler = Sampler(roots)
    sampler.start()
    time.sleep(1)
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    time.sleep(1)
    sampler.stop.set()
    sampler.join()
    cpu = sampler.in_window(start, end)
    return {
        "window_s": round(end - start, 2),
        "cores_by_role": largest_first(cpu, per=end - start, digits=3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    ap.add_argument("--idle-s", type=float, default=30, help="the idle cluster's window")
    ap.add_argument("--out", default="results/bench/cpu_profile.json")
    a = ap.parse_args()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rayscale-profile-") as d:
        state = Path(d) / "state"
        env = {**os.environ, "RAYSCALE_STATE_DIR": str(state)}
        subprocess.run([CLI, "cluster", "up", "--workers", str(a.workers), "--memory-per-worker",
                        "2"], check=True, env=env)  # fmt: skip
        try:
            rec = json.loads((state / "cluster.json").read_text())
            roots = [rec["head"]["proc"]["pid"], *(w["proc"]["pid"] for w in rec["workers"])]
            idle = idle_window(roots, a.idle_s)
            print(json.dumps(idle), flush=True)
            for scheduler in ("fifo", "asha"):
                rows.append(one(state, roots, scheduler, out.parent, a.rate))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            subprocess.run([CLI, "cluster", "down"], env=env)
    out.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "workers": a.workers, "job": bench.STANDARD, "idle": idle,
                               "runs": rows},
                              indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
