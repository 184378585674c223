"""The scaling study: for each worker count, resize -> wait -> run the job -> record.

The job is the bundled search (its job args) or any Tune script (`working_dir` and its
command); either is read from Tune's own experiment output on the head
(rayscale.tune_output), the bundled job's record from beside it. The bundled job's
points run the same trial configs (same seed, same data, FIFO unless the user asks for
ASHA); a script's points run what the script draws, and the study says whether that was
the same. The order of points is interleaved across repeats (1,2,4 then 4,2,1 ...) so that
drift in a shared machine's speed does not tilt the curve.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from rayscale import extras, jobs, lifecycle, predict, report, tune_output
from rayscale.errors import UserError
from rayscale.providers.base import Provider
from rayscale.state import results_dir

BASELINES = ("sequential", "joblib")


@dataclass
class StudyPlan:
    workers: list[int]
    repeats: int = 1
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    job_args: list[str] = field(default_factory=list)  # a script's: its command
    job_timeout: float | None = None
    working_dir: str | None = None  # a script's folder: the study runs job_args in it
    experiment_path: list[str] = field(default_factory=list)  # where it writes, on the head
    metric: str | None = None  # the script's Tune metric and mode, where it sets none
    mode: str | None = None

    def __post_init__(self) -> None:
        # Refused before any cluster is made: the fit and the plot come at the very end.
        if self.working_dir is not None:
            if self.baselines:
                raise UserError(
                    "the baselines run the bundled job's search, not your script",
                    "drop --baselines (none is the default with --working-dir)",
                )
            if not self.job_args:
                raise UserError(
                    "no command to measure", "pass it after --, e.g. -- python my_tune.py"
                )
            if not Path(self.working_dir).expanduser().is_dir():
                raise UserError(
                    f"--working-dir {self.working_dir} is not a folder",
                    "pass the folder that holds your script",
                )
        else:
            study_job_args(self.job_args)
        extras.need_study("rayscale scaling")
        if self.baselines:
            extras.need_job("the study's baselines (they run the search on this machine)")


PROGRESS = "progress.json"


@dataclass
class Progress:
    """What a study has finished, saved after each run so that an interrupted study
    (SIGTERM, Ctrl-C, a lost connection) loses at most the run in flight."""

    out: Path
    provider: str
    plan: StudyPlan
    runs: list[dict] = field(default_factory=list)
    baselines: dict[str, list[dict]] = field(default_factory=dict)  # kind -> its runs
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def done(self, repeat: int, n: int) -> bool:
        return any(r["repeat"] == repeat and r["workers"] == n for r in self.runs)

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        doc = {
            "provider": self.provider,
            "started": self.started,
            "plan": {
                "workers": self.plan.workers,
                "repeats": self.plan.repeats,
                "baselines": self.plan.baselines,
                "job_args": self.plan.job_args,
                "job_timeout": self.plan.job_timeout,
                "working_dir": self.plan.working_dir,
                "experiment_path": self.plan.experiment_path,
                "metric": self.plan.metric,
                "mode": self.plan.mode,
            },
            "runs": self.runs,
            "baselines": self.baselines,
        }
        tmp = self.out / f".{PROGRESS}.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.out / PROGRESS)  # never a half-written file

    @classmethod
    def load(cls, out: Path, provider: str) -> Progress:
        path = Path(out) / PROGRESS
        try:
            doc = json.loads(path.read_text())
            plan = StudyPlan(**doc["plan"])
        except FileNotFoundError:
            raise UserError(
                f"no study to resume in {out} ({PROGRESS} is missing)",
                "pass the --out folder of an interrupted `rayscale scaling`",
            ) from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"{path} is not a study's progress ({e})", "start the study afresh"
            ) from None
        if doc["provider"] != provider:
            raise UserError(
                f"the study in {out} ran on the {doc['provider']} provider, not {provider}",
                f"pass --provider {doc['provider']}: points of two providers are not one curve",
            )
        # Studies before the baselines were repeated kept one run per kind.
        baselines = {k: v if isinstance(v, list) else [v] for k, v in doc["baselines"].items()}
        return cls(Path(out), provider, plan, doc["runs"], baselines, doc["started"])


def progress_for(
    provider: str, plan: StudyPlan, out: str | None, resume: str | None, given: list[str]
) -> Progress:
    """A new study's progress, or an interrupted one's read back (its plan with it: `given`
    names the plan options the user passed, refused with --resume)."""
    if resume is None:
        path = Path(out) if out else results_dir() / time.strftime("scaling-%Y%m%d-%H%M%S")
        if (path / PROGRESS).exists() and not (path / "study.json").exists():
            raise UserError(
                f"{path} holds an unfinished study",
                f"resume it with `rayscale scaling --resume {path}`, or pass another --out",
            )
        return Progress(path, provider, plan)
    if given:
        raise UserError(
            f"--resume reads the study's plan from {Path(resume) / PROGRESS}",
            f"drop {', '.join(given)}",
        )
    return Progress.load(Path(resume), provider)


def order(workers: list[int], repeats: int) -> list[tuple[int, int]]:
    """(repeat, workers) pairs: ascending on even repeats, descending on odd ones."""
    out = []
    for r in range(repeats):
        seq = workers if r % 2 == 0 else list(reversed(workers))
        out += [(r, n) for n in seq]
    return out


def study_job_args(args: list[str]) -> list[str]:
    """The job args every point runs: the user's, plus FIFO and a fixed seed by default."""
    args = list(args)
    for flag in ("--mode", "--name", "--restore"):
        if jobs.given(args, flag):
            raise UserError(
                f"{flag} is set by the scaling study itself", f"remove {flag} from the job args"
            )
    if not jobs.given(args, "--scheduler"):
        args += ["--scheduler", "fifo"]
    if not jobs.given(args, "--seed"):
        args += ["--seed", "0"]
    return args


def search_note(args: list[str]) -> str | None:
    """What an adaptive search means for the curve, or None for the default (random) search."""
    alg = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--search-alg"), None)
    alg = alg or next((a.split("=", 1)[1] for a in args if a.startswith("--search-alg=")), "random")
    if alg == "random":
        return None
    return (
        f"--search-alg {alg} is adaptive: its configs depend on the order results arrive, so each "
        "point trains its own configs; read each point's best RMSE beside its time"
    )


def overhead_per_trial(wall_s: float, cpus: float, sum_train_s: float, trials: int) -> float:
    """What a search spent beyond training, per trial: (wall x CPUs - train time) / trials."""
    return (wall_s * cpus - sum_train_s) / max(1, trials)


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


def clean_points(points: list[dict]) -> list[dict]:
    """The points with a clean run, each with only its clean runs: what the fit and the
    replay model may read."""
    return [{**p, "runs": clean_runs(p["runs"])} for p in points if not p["disturbed"]]


def clean_runs(runs: list[dict]) -> list[dict]:
    """The runs no retried trial or replaced worker disturbed."""
    return [r for r in runs if not r.get("disturbed_by")]


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


def run_script_point(
    provider: Provider, j: jobs.Jobs, n: int, repeat: int, plan: StudyPlan, say
) -> dict:
    """One run of a Tune script: its times and trials from Tune's own experiment output."""
    resized = resize(provider, n)
    submitted = time.perf_counter()
    with CpuSampler(provider) as cpu, Keeper(provider, n) as keeper:
        job_id = j.submit_command(
            plan.job_args,
            Path(plan.working_dir).expanduser(),
            metadata={"rayscale": f"scaling w{n} r{repeat}"},
        )
        status = wait_or_stop(j, job_id, plan.job_timeout)
    if status != "SUCCEEDED":
        jobs.check_ended_well(job_id, j.logs(job_id), status)
    submit_to_end = time.perf_counter() - submitted
    exp = tune_output.read(j, job_id, plan.experiment_path, plan.metric, plan.mode)
    info = j.info(job_id)
    w0, w1 = exp.window
    busy = cpu.busy()
    workers_busy = [v for k, v in busy.items() if k != "head"]
    cpus = provider.status().worker_cpus
    timed = [t for t in exp.trials if t.iterations]
    row = {
        "workers": n,
        "repeat": repeat,
        "job_id": job_id,
        "cpus": cpus,
        # The search: the first trial's start to the last trial's end (Tune's rows).
        "wall_s": round(w1 - w0, 3),
        "sum_train_s": round(sum(t.time_total_s for t in timed), 3),
        "trials_completed": sum(1 for t in exp.trials if t.status == "TERMINATED"),
        "trials": len(exp.trials),
        "trials_errored": sum(1 for t in exp.trials if t.status == "ERROR"),
        "best_metric": exp.best(),
        "cpu_busy_avg": round(sum(workers_busy) / cpus, 3) if workers_busy and cpus else None,
        "cpu_busy_by_node": busy,
        # The whole job as the Job API timed it: driver start, the search, the script's end.
        "job_total_s": round((info.end_time - info.start_time) / 1000, 3),
        "submit_to_result_s": round(submit_to_end, 3),
        "cpus_per_trial": max((t.cpus for t in exp.trials), default=1.0) or 1.0,
        "timeline": exp.timeline(),
        "start_uncertainty_s": max((t.start_uncertainty_s for t in timed), default=0.0),
        "driver": driver_load(cpu, info, (w0, w1), exp),
        "resize": resized,
        "experiment": exp.path,
        "metric": exp.metric,
        "mode": exp.mode,
        "configs": configs_digest([t.config for t in exp.trials]),
        "retries": 0,
        "workers_replaced": keeper.replaced,
    }
    row["disturbed_by"] = disturbance(0, keeper.replaced)
    best = row["best_metric"]
    say(
        f"  workers={n} repeat={repeat}: search {row['wall_s']:.1f} s, "
        f"{row['trials_completed']}/{row['trials']} trials"
        + (f", best {exp.metric} {best:.4g}" if best is not None else "")
        + f", cores busy {busy}"
        + (f"; DISTURBED: {', '.join(row['disturbed_by'])}" if row["disturbed_by"] else "")
    )
    return row


def configs_digest(configs: list[dict]) -> str:
    """The same digest for the same set of trial configs, in whatever order they ran."""
    import hashlib

    rows = sorted(json.dumps(c, sort_keys=True, default=str) for c in configs)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


# The bundled job's record, written beside its Tune output (job/storage.py).
RECORD = "rayscale-result.json"


def run_point(
    provider: Provider,
    j: jobs.Jobs,
    n: int,
    repeat: int,
    job_args: list[str],
    timeout: float | None,
    say: Callable[[str], None],
) -> dict:
    """One run of the bundled job, read as any script's: from its Tune output on the head,
    where its record (the baseline, the test-set scores, the trials' exact clocks) lies
    beside Tune's own files."""
    resized = resize(provider, n)
    name = f"scaling-w{n}-r{repeat}-{int(time.time())}"
    submitted, submitted_at = time.perf_counter(), time.time()
    with CpuSampler(provider) as cpu, Keeper(provider, n) as keeper:
        job_id = j.submit(job_args + ["--name", name])
        status = wait_or_stop(j, job_id, timeout)
    # The whole job as its user waits for it: submission, driver start-up, data, baseline,
    # search, final fit.
    submit_to_result = time.perf_counter() - submitted
    if status != "SUCCEEDED":
        j.result(job_id, status)  # raises the job's own error
    exp = tune_output.read(j, job_id, [f"{jobs.storage_path(job_args, j.endpoint)}/{name}"])
    rec = exp.extras.get(RECORD)
    if rec is None:
        raise UserError(
            f"job {job_id}'s Tune output at {exp.path} has no {RECORD}",
            "is the cluster's job older than this launcher? rebuild or reinstall it",
        )
    busy = cpu.busy()
    workers_busy = [v for k, v in busy.items() if k != "head"]
    cpus = rec["cluster"]["cpus"]
    procs = {t.get("pid"): t.get("process_started_at") for t in rec.get("trials", [])}
    row = {
        "workers": n,
        "repeat": repeat,
        "job_id": job_id,
        "cpus": cpus,
        "wall_s": rec["wall_s"],
        "sum_train_s": rec["sum_train_s"],
        "sum_train_cpu_s": rec.get("sum_train_cpu_s"),
        "trials_completed": sum(1 for t in exp.trials if t.status == "TERMINATED"),
        "trials": len(exp.trials),
        "trials_errored": sum(1 for t in exp.trials if t.status == "ERROR"),
        "best_rmse": exp.best(),
        "best_metric": exp.best(),
        "test_rmse": (rec.get("tuned") or {}).get("rmse"),
        "cpu_busy_avg": round(sum(workers_busy) / cpus, 3) if workers_busy and cpus else None,
        "cpu_busy_by_node": busy,
        "job_total_s": rec["total_s"],
        "submit_to_result_s": round(submit_to_result, 3),
        "cpus_per_trial": rec.get("cpus_per_trial") or 1,
        "timeline": timeline(rec),
        "experiment": exp.path,
        "metric": exp.metric,
        "mode": exp.mode,
        "configs": configs_digest([t.config for t in exp.trials]),
        "retries": sum((rec.get("retried_trials") or {}).values()),
        # How many processes the trials ran in, and how many of those had started before
        # the job's submission (left by an earlier job).
        "trial_processes": len(procs),
        "trial_processes_before_submit": sum(
            1 for started in procs.values() if started is not None and started < submitted_at
        ),
        "workers_replaced": keeper.replaced,
        "driver": driver_load(cpu, j.info(job_id), tuple(rec["search_window"]), exp),
        "resize": resized,
    }
    row["disturbed_by"] = disturbance(row["retries"], keeper.replaced)
    best = row["best_rmse"]
    say(
        f"  workers={n} repeat={repeat}: wall {row['wall_s']:.1f} s, "
        f"{row['trials_completed']}/{row['trials']} trials"
        + (f", best RMSE {best:.4g}" if best is not None else "")
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


def timeline(rec: dict) -> list[dict]:
    """Each completed trial's start and end in the search window, and its process: what
    rayscale.predict replays."""
    window = rec.get("search_window")
    if not window:
        return []
    t0 = window[0]
    return [
        {
            # From entering the trainable (its DMatrix build included) to its last report.
            "start": round(t["started_at"] - (t.get("setup_s") or 0.0) - t0, 3),
            "end": round(t["ended_at"] - t0, 3),
            "proc": f"{t.get('node_id')}:{t.get('pid')}",
            "train_s": t["train_s"],
            "rounds": t["rounds"],
            # What ASHA's replay needs: the rounds the config asked for, and the trial's
            # [rounds, rmse, s from its start] at each rung and at its end.
            "total_rounds": (t.get("config") or {}).get("num_boost_round", t["rounds"]),
            "marks": t.get("marks") or [],
            "draw": t.get("draw"),
            # What the cost model of a larger search is fitted on (rayscale.predict).
            "config": t.get("config"),
        }
        for t in rec["trials"]
        if t.get("started_at") and t.get("ended_at") and not t.get("error")
    ]


def run_baseline(
    kind: str, job_args: list[str], n_jobs: int, job_dir: Path, timeout: float | None
) -> dict:
    """The same configs without a cluster, on this machine: what a user would do instead."""
    args = [
        sys.executable,
        str(job_dir / "tune_xgboost.py"),
        *jobs.localise_paths(job_args),
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
        "best_rmse": rec["best_valid_rmse"],
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


def baseline_summary(runs: list[dict]) -> dict:
    """A baseline's runs as the study shows it: the medians (the same configs every run, so
    the same best model), and each run's times, in the order they ran."""
    out = {**runs[0]}
    keys = ("wall_s", "sum_train_s", "sum_train_cpu_s")
    for key in keys:
        out[key] = _median_of(runs, key)
    out["runs"] = [{k: r.get(k) for k in keys} for r in runs]
    return out


def _median_of(runs: list[dict], key: str) -> float | None:
    """Median of a field that runs recorded before the field existed lack (--resume)."""
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def best_of(values: list, mode: str | None) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return max(vals) if mode == "max" else min(vals)


def summarise(runs: list[dict], mode: str | None = "min") -> list[dict]:
    by_n: dict[int, list[dict]] = {}
    for r in runs:
        by_n.setdefault(r["workers"], []).append(r)
    # A point's time comes from its undisturbed runs where it has any; a point with none is
    # marked `disturbed`: its time is not a speedup to read.
    timed = {n: clean_runs(rs) or rs for n, rs in by_n.items()}
    base_n = min(by_n)
    base_wall = statistics.median(r["wall_s"] for r in timed[base_n])
    points = []
    for n in sorted(by_n):
        rs = by_n[n]
        wall = statistics.median(r["wall_s"] for r in timed[n])
        # Relative to the 1-worker point; if 1 was not measured, the smallest point is
        # taken as perfectly efficient (stated in the study as speedup_base).
        speedup = base_n * base_wall / wall
        cpus = rs[0]["cpus"]
        overhead = statistics.median(
            overhead_per_trial(r["wall_s"], r["cpus"], r["sum_train_s"], r["trials_completed"])
            for r in rs
        )
        busy = [r["cpu_busy_avg"] for r in rs if r["cpu_busy_avg"] is not None]
        points.append(
            {
                "workers": n,
                "cpus": cpus,
                "runs": [
                    {
                        k: r[k]
                        for k in (
                            "wall_s",
                            "sum_train_s",
                            "sum_train_cpu_s",
                            "trials_completed",
                            "trials",
                            "trials_errored",
                            "best_rmse",
                            "best_metric",
                            "cpu_busy_avg",
                            "cpu_busy_by_node",
                            "job_id",
                            "repeat",
                            "job_total_s",
                            "submit_to_result_s",
                            "timeline",
                            "retries",
                            "workers_replaced",
                            "disturbed_by",
                            "trial_processes",
                            "trial_processes_before_submit",
                            "start_uncertainty_s",
                            "driver",
                            "resize",
                            "configs",
                            "experiment",
                            "metric",
                            "mode",
                        )
                        if k in r
                    }
                    for r in rs
                ],
                "cpus_per_trial": rs[0].get("cpus_per_trial", 1),
                "disturbed": all(r.get("disturbed_by") for r in rs),
                "disturbed_runs": sum(1 for r in rs if r.get("disturbed_by")),
                "wall_s_median": round(wall, 3),
                "submit_to_result_s_median": _median_of(timed[n], "submit_to_result_s"),
                "wall_s_min": round(min(r["wall_s"] for r in rs), 3),
                "wall_s_max": round(max(r["wall_s"] for r in rs), 3),
                "speedup": round(speedup, 3),
                "efficiency": round(speedup / n, 3),
                "overhead_per_trial_s": round(overhead, 4),
                "best_metric": best_of(
                    [r.get("best_metric", r.get("best_rmse")) for r in rs], mode
                ),
                "cpu_busy_avg": round(statistics.median(busy), 3) if busy else None,
            }
        )
    return points


def write_outputs(study: dict, runs: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(study, indent=2))
    cols = [
        "workers",
        "repeat",
        "job_id",
        "cpus",
        "wall_s",
        "sum_train_s",
        "trials_completed",
        "trials",
        "best_metric",
        "test_rmse",
        "cpu_busy_avg",
        "job_total_s",
    ]
    with open(out / "points.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(runs)
    from rayscale import plot

    plot.scaling_png(study, out / "scaling.png")


def run(
    provider: Provider, progress: Progress, say: Callable[[str], None], job_dir: Path | None = None
) -> dict:
    """Run what the study has not finished yet on a cluster the provider manages (it must
    be up); each finished run is saved at once. On interruption, says how to resume."""
    try:
        return _run(provider, progress, say, job_dir)
    except BaseException:
        if progress.runs or progress.baselines:
            say(
                f"finished runs are kept in {progress.out}: "
                f"`rayscale scaling --resume {progress.out}` runs only what is missing"
            )
        raise


def _run(provider: Provider, progress: Progress, say, job_dir: Path | None) -> dict:
    plan, out = progress.plan, progress.out
    job_dir = Path(job_dir or jobs.default_job_dir())
    script = plan.working_dir is not None
    job_args = plan.job_args if script else study_job_args(plan.job_args)
    note = None if script else search_note(job_args)
    if note:
        say(f"note: {note}")
    if not script and not jobs.given(plan.job_args, "--scheduler"):
        say(
            "note: FIFO, the study's default scheduler: ASHA's stops depend on which trials "
            "finish first, so each worker count would time another search "
            "(pass --scheduler asha to time it anyway; `rayscale plan --scheduler asha` replays it)"
        )
    sequence = order(plan.workers, plan.repeats)
    todo = [(r, n) for r, n in sequence if not progress.done(r, n)]
    if progress.runs:
        say(f"resuming: {len(progress.runs)} runs done, {len(todo)} to run")
    progress.save()
    j = jobs.Jobs(provider.endpoint())
    for repeat, n in todo:
        if plan.working_dir is not None:
            progress.runs.append(run_script_point(provider, j, n, repeat, plan, say))
        else:
            progress.runs.append(run_point(provider, j, n, repeat, job_args, plan.job_timeout, say))
        progress.save()
    runs = sorted(progress.runs, key=lambda r: sequence.index((r["repeat"], r["workers"])))
    cpus_per_worker = max(1, int(runs[0]["cpus"] // runs[0]["workers"]))
    n_jobs = max(1, min(max(plan.workers) * cpus_per_worker, os.cpu_count() or 1))
    # As often as each point, the kinds taking turns: the host contention (joblib's trials
    # over the loop's) is read from neighbouring runs, which see the machine alike.
    for repeat in range(plan.repeats):
        for kind in plan.baselines:
            done = progress.baselines.setdefault(kind, [])
            if len(done) > repeat:
                continue
            jobs_note = f" (n_jobs={n_jobs})" if kind == "joblib" else ""
            say(f"  baseline {kind}{jobs_note} [{repeat + 1}/{plan.repeats}] ...")
            done.append(run_baseline(kind, job_args, n_jobs, job_dir, plan.job_timeout))
            progress.save()
    calibration = None
    if not script and "joblib" not in plan.baselines:
        calibration = calibrate(progress, job_args, n_jobs, job_dir, say)
    metric = workload_metric(runs, script)
    points = summarise(runs, metric["mode"])
    clean = clean_points(points)
    from rayscale import fit as fitmod  # numpy and scipy: the study extra, checked by StudyPlan

    study = {
        "provider": provider.name,
        # The bundled job's args (what the replay reads its scheduler from); a script's
        # command is in `workload`, and it is replayed as measured.
        "job_args": [] if script else job_args,
        "workload": workload(plan, runs),
        "metric": metric,
        "machine": machine(),
        # Its workers shared this machine's cores: the replay model scales trial costs by it.
        "one_machine": provider.one_machine,
        "created": progress.started,
        "speedup_base_workers": points[0]["workers"],
        "points": points,
        "baselines": {k: baseline_summary(progress.baselines[k]) for k in plan.baselines},
        "calibration": calibration,
        # Disturbed points (no clean run) inform neither the fit nor the replay model.
        "fit": fitmod.fit([p["workers"] for p in clean], [p["speedup"] for p in clean]),
        "disturbed_points": [p["workers"] for p in points if p["disturbed"]],
        "data": tune_output.describe_command(job_args) if script else data_label(job_args),
        "search_note": note,
    }
    # What was measured is written before anything is derived from it: a prediction
    # that fails costs one warning, never the study.
    study["prediction"] = None
    write_outputs(study, runs, out)
    if clean:
        try:
            study["prediction"] = predict.study_prediction(
                clean, study["job_args"], predict.host_of(study)
            )
        except Exception as e:  # noqa: BLE001 (any failure here must not lose the study)
            report.say(
                f"warning: no prediction from this study ({type(e).__name__}: {e}); "
                f"its measurements are in {out / 'study.json'}",
                err=True,
            )
        else:
            (out / "study.json").write_text(json.dumps(study, indent=2))
    return study


def workload(plan: StudyPlan, runs: list[dict]) -> dict:
    """What the study measured: the bundled job, or a script and what Tune said of it."""
    digests = {r.get("configs") for r in runs}
    common = {
        "experiments": [r.get("experiment") for r in runs],
        # A script draws its own configs: the study can only say whether they matched.
        "same_configs": len(digests) == 1,
    }
    if plan.working_dir is None:
        return {"kind": "bundled", **common}
    return {
        "kind": "script",
        "working_dir": str(Path(plan.working_dir).expanduser().resolve()),
        "command": plan.job_args,
        **common,
        "start_uncertainty_s": max(
            (r.get("start_uncertainty_s") or 0.0 for r in runs), default=0.0
        ),
    }


def workload_metric(runs: list[dict], script: bool) -> dict:
    """The metric the best values are in: the script's Tune metric and mode, or RMSE."""
    if not script:
        return {"name": "valid RMSE", "mode": "min"}
    return {"name": runs[0].get("metric"), "mode": runs[0].get("mode")}


def parse_baselines(text: str) -> list[str]:
    names = [b.strip() for b in text.split(",") if b.strip() and b.strip() != "none"]
    bad = [b for b in names if b not in BASELINES]
    if bad:
        raise UserError(
            f"unknown baseline {bad[0]!r}", f"choose from {', '.join(BASELINES)} or none"
        )
    return names


@contextlib.contextmanager
def cluster_for(provider: Provider, workers: int, say: Callable[[str], None]) -> Iterator[None]:
    """Use the cluster the state dir records for this provider, else bring one up.

    Tears down only what it brought up, also on error or Ctrl-C; a cluster it found keeps
    its worker count.
    """
    rec = provider.state.read()
    if rec and rec.get("provider") != provider.name:
        raise UserError(
            f"the state dir {provider.state.path} holds a {rec['provider']} cluster, "
            f"not {provider.name}",
            "pass --provider to match it, or another --state-dir",
        )
    if provider.is_running():
        say(f"using the {provider.name} cluster recorded in {provider.state.path}")
        had = provider.status().alive_workers
        try:
            yield
        finally:
            # A cluster the study found is left as it found it, also when a run failed.
            if had and provider.status().alive_workers != had:
                say(f"scaling the cluster back to the {had} workers it had")
                scale(provider, had)
        return
    say(f"bringing up a {provider.name} cluster with {workers} workers ...")
    lifecycle.up(provider, workers)
    try:
        yield
    finally:
        say("taking down the cluster this study brought up")
        with provider.state.lock():
            provider.down()


def data_label(job_args: list[str]) -> str:
    for i, a in enumerate(job_args):
        if a == "--data" and i + 1 < len(job_args):
            return (
                os.path.basename(job_args[i + 1]) if ":" not in job_args[i + 1] else job_args[i + 1]
            )
        if a.startswith("--data="):
            return a.split("=", 1)[1]
    return "synthetic (job default)"
