"""A scaling study's plan, and its progress saved after each run (what --resume reads)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from rayscale import extras, jobs
from rayscale.errors import UserError
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
        "point trains its own configs; read each point's best value beside its time"
    )


def parse_baselines(text: str) -> list[str]:
    names = [b.strip() for b in text.split(",") if b.strip() and b.strip() != "none"]
    bad = [b for b in names if b not in BASELINES]
    if bad:
        raise UserError(
            f"unknown baseline {bad[0]!r}", f"choose from {', '.join(BASELINES)} or none"
        )
    return names


def data_label(job_args: list[str]) -> str:
    for i, a in enumerate(job_args):
        if a == "--data" and i + 1 < len(job_args):
            return (
                os.path.basename(job_args[i + 1]) if ":" not in job_args[i + 1] else job_args[i + 1]
            )
        if a.startswith("--data="):
            return a.split("=", 1)[1]
    return "synthetic (job default)"
