"""What a study runs, and how it reads one run: the bundled search or any Tune script.

The point runner (study.measure.run_point), the summary and the study's orchestration
know only this interface; what is particular to the bundled XGBoost job (its record beside
Tune's output, its baselines, its test-set score) stays in `Bundled`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rayscale import jobs, tune_output
from rayscale.errors import UserError
from rayscale.study.plan import StudyPlan, data_label, search_note, study_job_args

# The bundled job's record, written beside its Tune output (job/storage.py).
RECORD = "rayscale-result.json"


@dataclass
class Reading:
    """One run as its workload read it: Tune's experiment, and the figures only the
    workload knows how to take (its search window, its clocks, its cores)."""

    exp: tune_output.Experiment
    window: tuple[float, float]
    cpus: float
    job_total_s: float
    timeline: list[dict]
    row: dict = field(default_factory=dict)  # the workload's own columns
    retries: int = 0


class Workload:
    """The interface; `Bundled` and `Script` below are its two kinds."""

    kind: str
    job_args: list[str]  # what the baselines and the replay read ([] where none apply)
    columns: tuple[str, ...] = ()  # the workload's own columns in points.csv

    def search_note(self) -> str | None:
        """What the search's kind means for the curve (an adaptive search's), or None."""
        return None

    def notes(self) -> list[str]:
        """What to tell the user before the first point."""
        return []

    def submit(self, j: jobs.Jobs, n: int, repeat: int) -> str:
        raise NotImplementedError

    def failed(self, j: jobs.Jobs, job_id: str, status: str) -> None:
        """Raises the job's own error."""
        raise NotImplementedError

    def read(self, j: jobs.Jobs, job_id: str, info, provider, submitted_at: float) -> Reading:
        raise NotImplementedError

    def metric(self, runs: list[dict]) -> dict:
        """The metric the best values are in: {name, mode}."""
        return {"name": runs[0].get("metric"), "mode": runs[0].get("mode")}

    def describe(self, runs: list[dict]) -> dict:
        """The study's `workload` entry."""
        digests = {r.get("configs") for r in runs}
        return {
            "kind": self.kind,
            "experiments": [r.get("experiment") for r in runs],
            # A script draws its own configs: the study can only say whether they matched.
            "same_configs": len(digests) == 1,
        }

    def data(self) -> str:
        raise NotImplementedError


class Bundled(Workload):
    """The bundled search (job/tune_xgboost.py): the same configs at every point, read from
    Tune's output and the record the job writes beside it."""

    kind = "bundled"
    columns = ("sum_train_cpu_s", "test_rmse")

    def __init__(self, job_args: list[str]):
        self.given = list(job_args)
        self.job_args = study_job_args(job_args)

    def search_note(self) -> str | None:
        return search_note(self.job_args)

    def notes(self) -> list[str]:
        out = [n for n in [self.search_note()] if n]
        if not jobs.given(self.given, "--scheduler"):
            out.append(
                "FIFO, the study's default scheduler: ASHA's stops depend on which trials "
                "finish first, so each worker count would time another search "
                "(pass --scheduler asha to time it anyway; `rayscale plan --scheduler asha` "
                "replays it)"
            )
        return out

    def submit(self, j: jobs.Jobs, n: int, repeat: int) -> str:
        self._name = f"scaling-w{n}-r{repeat}-{int(time.time())}"
        return j.submit(self.job_args + ["--name", self._name])

    def failed(self, j: jobs.Jobs, job_id: str, status: str) -> None:
        j.result(job_id, status)

    def read(self, j: jobs.Jobs, job_id: str, info, provider, submitted_at: float) -> Reading:
        where = f"{jobs.storage_path(self.job_args, j.endpoint)}/{self._name}"
        exp = tune_output.read(j, job_id, [where])
        rec = exp.extras.get(RECORD)
        if rec is None:
            raise UserError(
                f"job {job_id}'s Tune output at {exp.path} has no {RECORD}",
                "is the cluster's job older than this launcher? rebuild or reinstall it",
            )
        procs = {t.get("pid"): t.get("process_started_at") for t in rec.get("trials", [])}
        return Reading(
            exp=exp,
            window=tuple(rec["search_window"]),  # type: ignore[arg-type]
            cpus=rec["cluster"]["cpus"],
            job_total_s=rec["total_s"],
            timeline=timeline(rec),
            retries=sum((rec.get("retried_trials") or {}).values()),
            row={
                # The record's clocks: the job's own, not Tune's whole-second rows.
                "wall_s": rec["wall_s"],
                "sum_train_s": rec["sum_train_s"],
                "sum_train_cpu_s": rec.get("sum_train_cpu_s"),
                "test_rmse": (rec.get("tuned") or {}).get("rmse"),
                "cpus_per_trial": rec.get("cpus_per_trial") or 1,
                # How many processes the trials ran in, and how many of those had started
                # before the job's submission (left by an earlier job).
                "trial_processes": len(procs),
                "trial_processes_before_submit": sum(
                    1 for s in procs.values() if s is not None and s < submitted_at
                ),
            },
        )

    def metric(self, runs: list[dict]) -> dict:
        return {"name": "valid RMSE", "mode": "min"}

    def data(self) -> str:
        return data_label(self.job_args)


class Script(Workload):
    """Any Tune script (`--working-dir` and its command): what it draws, read from Tune's
    own experiment output on the head."""

    kind = "script"

    def __init__(self, plan: StudyPlan):
        self.plan = plan
        self.job_args: list[str] = []  # a script's command is replayed as measured

    def submit(self, j: jobs.Jobs, n: int, repeat: int) -> str:
        return j.submit_command(
            self.plan.job_args,
            Path(self.plan.working_dir or ".").expanduser(),
            metadata={"rayscale": f"scaling w{n} r{repeat}"},
        )

    def failed(self, j: jobs.Jobs, job_id: str, status: str) -> None:
        jobs.check_ended_well(job_id, j.logs(job_id), status)

    def read(self, j: jobs.Jobs, job_id: str, info, provider, submitted_at: float) -> Reading:
        p = self.plan
        exp = tune_output.read(j, job_id, p.experiment_path, p.metric, p.mode)
        w0, w1 = exp.window
        timed = [t for t in exp.trials if t.iterations]
        return Reading(
            exp=exp,
            window=(w0, w1),
            cpus=provider.status().worker_cpus,
            # The whole job as the Job API timed it: driver start, the search, the end.
            job_total_s=round((info.end_time - info.start_time) / 1000, 3),
            timeline=exp.timeline(),
            row={
                # The search: the first trial's start to the last trial's end (Tune's rows).
                "wall_s": round(w1 - w0, 3),
                "sum_train_s": round(sum(t.time_total_s for t in timed), 3),
                "cpus_per_trial": max((t.cpus for t in exp.trials), default=1.0) or 1.0,
                "start_uncertainty_s": max((t.start_uncertainty_s for t in timed), default=0.0),
            },
        )

    def describe(self, runs: list[dict]) -> dict:
        return {
            **super().describe(runs),
            "working_dir": str(Path(self.plan.working_dir or ".").expanduser().resolve()),
            "command": self.plan.job_args,
            "start_uncertainty_s": max(
                (r.get("start_uncertainty_s") or 0.0 for r in runs), default=0.0
            ),
        }

    def data(self) -> str:
        return tune_output.describe_command(self.plan.job_args)


def of(plan: StudyPlan) -> Workload:
    return Script(plan) if plan.working_dir is not None else Bundled(plan.job_args)


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
            # [rounds, metric, s from its start] at each rung and at its end.
            "total_rounds": (t.get("config") or {}).get("num_boost_round", t["rounds"]),
            "marks": t.get("marks") or [],
            "draw": t.get("draw"),
            # What the cost model of a larger search is fitted on (rayscale.predict).
            "config": t.get("config"),
        }
        for t in rec["trials"]
        if t.get("started_at") and t.get("ended_at") and not t.get("error")
    ]
