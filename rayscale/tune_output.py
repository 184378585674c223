"""A job's Tune search, read from Tune's own experiment output.

The experiment lives where the job's driver wrote it: on the head (Tune's default
`~/ray_results`) or at the script's `storage_path`. So the launcher asks the head: a small
job (rayscale/onhead/read_tune.py) finds the experiments written while the job ran and reads
them through Tune's public ExperimentAnalysis. From the trials' result rows this module
makes each trial's timeline, the one the study and the replay model read.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rayscale import console, job_files, jobs
from rayscale.errors import UserError
from rayscale.state import command

READER_DIR = Path(__file__).resolve().parent / "onhead"


def submit_reader(j: jobs.Jobs, argv: list[str], what: str) -> str:
    """Submit ARGV, one of the head's readers (rayscale/onhead/), as a job; its id. They
    go as the one folder the job uploads, with the job's tune_format.py beside them, the
    module of Tune's formats they import (Ray 2.60's Job SDK cannot upload a single-file
    py_module: it hashes the file as a directory)."""
    with tempfile.TemporaryDirectory(prefix="rayscale-reader-") as d:
        for f in [*READER_DIR.glob("*.py"), job_files.tune_format_file()]:
            shutil.copyfile(f, Path(d) / f.name)
        return j.submit_command(argv, Path(d), metadata={"rayscale": what})


MARKER = "RAYSCALE_TUNE "
READ_TIMEOUT = 180.0


@dataclass
class Trial:
    trial_id: str
    status: str
    config: dict
    start: float  # epoch seconds, estimated from the rows (see `span`)
    end: float
    proc: str  # node IP : pid of the process that ran it
    iterations: int
    time_total_s: float
    final: float | None  # the run's metric in its last row (Tune's default scope "last")
    start_uncertainty_s: float
    cpus: float = 1.0  # what the trial asked of a node


@dataclass
class Experiment:
    path: str
    metric: str | None
    mode: str | None
    trials: list[Trial]
    extras: dict = field(default_factory=dict)

    @property
    def window(self) -> tuple[float, float]:
        """The search's window: the first trial's start to the last trial's end."""
        timed = [t for t in self.trials if t.iterations]
        return min(t.start for t in timed), max(t.end for t in timed)

    def best(self) -> float | None:
        vals = [t.final for t in self.trials if t.final is not None]
        if not vals or self.mode not in ("min", "max"):
            return None
        return min(vals) if self.mode == "min" else max(vals)

    def timeline(self) -> list[dict]:
        """Each trial that reported, in the search window, as rayscale.predict replays it
        (its stopping as measured: early-stopped trials keep their measured length)."""
        t0 = self.window[0]
        return [
            {
                "start": round(t.start - t0, 3),
                "end": round(t.end - t0, 3),
                "proc": t.proc,
                "train_s": round(t.time_total_s, 3),
                "rounds": t.iterations,
                "total_rounds": t.iterations,
                "status": t.status,
                "config": t.config,  # matches a trial across points (rayscale.predict)
            }
            for t in sorted(self.trials, key=lambda t: t.start)
            if t.iterations and t.status != "ERROR"
        ]


def span(rows: list[list]) -> tuple[float, float, float] | None:
    """(start, end, uncertainty of start) of a trial from its result rows.

    A row's `timestamp` is whole seconds (int(time.time()) when Tune took the result); its
    `time_total_s` counts from the trial's start, to the microsecond. Each row so puts the
    start in [timestamp - total, timestamp + 1 - total); the start is the middle of where
    all rows agree, and the end the start plus the last row's total."""
    lo, hi, last = -math.inf, math.inf, None
    for _it, ts, total, *_ in rows:
        if ts is None or total is None:
            continue
        lo, hi = max(lo, ts - total), min(hi, ts + 1 - total)
        last = total if last is None else max(last, total)
    if last is None:
        return None
    if lo > hi:  # rows out of step by a clock adjustment: the latest bound holds
        hi = lo
    start = (lo + hi) / 2
    return start, start + last, (hi - lo) / 2


def experiment_of(doc: dict) -> Experiment:
    trials = []
    for t in doc["trials"]:
        rows = t["rows"]
        s = span(rows)
        last = rows[-1] if rows else [None] * 6
        trials.append(
            Trial(
                trial_id=t["trial_id"],
                status=t["status"],
                config=t.get("config") or {},
                start=s[0] if s else 0.0,
                end=s[1] if s else 0.0,
                proc=f"{last[4]}:{last[5]}",
                iterations=int(last[0] or 0) if s else 0,
                time_total_s=float(last[2] or 0.0),
                final=last[3],
                start_uncertainty_s=round(s[2], 3) if s else 0.0,
                cpus=t.get("cpus") or 1.0,
            )
        )
    return Experiment(
        doc["path"], doc.get("metric"), doc.get("mode"), trials, doc.get("extras") or {}
    )


def _written(
    j: jobs.Jobs,
    job_id: str,
    paths: list[str] | None = None,
    metric: str | None = None,
    mode: str | None = None,
) -> tuple[list[Experiment], str]:
    """The Tune experiments with trials that job JOB_ID (ended) wrote, read on the head, and
    the roots searched, as the head spells them."""
    info = j.info(job_id)
    since, until = info.start_time / 1000, (info.end_time or info.start_time) / 1000
    cmd = ["python", "read_tune.py", "--since", f"{since:.3f}", "--until", f"{until:.3f}"]
    for p in paths or ():
        cmd += ["--path", p]
    if metric:
        cmd += ["--metric", metric]
    if mode:
        cmd += ["--mode", mode]
    reader = submit_reader(j, cmd, f"reads {job_id}'s Tune output")
    status = j.wait(reader, READ_TIMEOUT)
    log = j.logs(reader)
    found = [x for x in log.splitlines() if x.startswith(MARKER)]
    if status != "SUCCEEDED" or not found:
        tail = " | ".join(x.strip() for x in log.strip().splitlines()[-2:]) or "no output"
        raise UserError(
            f"could not read the Tune output of job {job_id} on the head ({tail[:300]})",
            f"read the reader's log with {command(f'job logs {reader}')}",
        )
    doc = json.loads(found[-1][len(MARKER) :])
    if doc.get("warning"):
        console.say(f"warning: {doc['warning']}", err=True)
    exps = [experiment_of(e) for e in doc["experiments"] if e["trials"]]
    return exps, ", ".join(doc["roots"])


def read(
    j: jobs.Jobs,
    job_id: str,
    paths: list[str] | None = None,
    metric: str | None = None,
    mode: str | None = None,
) -> Experiment:
    """The one Tune experiment job JOB_ID (ended) wrote, read on the head."""
    exps, where = _written(j, job_id, paths, metric, mode)
    if not exps:
        raise UserError(
            f"job {job_id} wrote no Tune experiment to {where} while it ran",
            "does the command run a Tune search? If it sets RunConfig(storage_path=...), "
            "pass that path with --experiment-path",
        )
    if len(exps) > 1:
        names = ", ".join(Path(e.path).name for e in exps)
        raise UserError(
            f"job {job_id} wrote {len(exps)} Tune experiments ({names})",
            "pass the one to measure with --experiment-path",
        )
    return exps[0]


def written_lines(j: jobs.Jobs, job_id: str) -> list[str]:
    """Where job JOB_ID's Tune searches left their output on the head, one line each, with
    their trials and best result: what `job submit --working-dir` tells when it ends."""
    try:
        exps, where = _written(j, job_id)
    except UserError as e:
        return [f"warning: {e.line()}"]
    if not exps:
        return [
            f"no Tune experiment written to {where} on the head while it ran "
            "(a script that sets RunConfig(storage_path=...) writes there instead)"
        ]
    return [_summary(e) for e in exps]


def _summary(e: Experiment) -> str:
    states = Counter(t.status for t in e.trials)
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    line = f"Tune output on the head: {e.path} ({len(e.trials)} trials: {counts}"
    best = e.best()
    return line + (f"; best {e.metric} {best:.6g}, {e.mode})" if best is not None else ")")


def describe_command(command: list[str]) -> str:
    return command[0] if len(command) == 1 else shlex.join(command)
