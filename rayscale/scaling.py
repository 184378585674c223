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
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from rayscale import job_files, jobs, lifecycle, predict, report
from rayscale.errors import UserError
from rayscale.providers.base import Provider
from rayscale.study import workload
from rayscale.study.baselines import calibrate, run_baseline
from rayscale.study.measure import machine, run_point, scale
from rayscale.study.plan import Progress, order
from rayscale.study.summary import baseline_summary, clean_points, summarise, write_outputs


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
    job_dir = Path(job_dir or job_files.default_job_dir())
    work = workload.of(plan)
    job_args = work.job_args
    for note in work.notes():
        say(f"note: {note}")
    sequence = order(plan.workers, plan.repeats)
    todo = [(r, n) for r, n in sequence if not progress.done(r, n)]
    if progress.runs:
        say(f"resuming: {len(progress.runs)} runs done, {len(todo)} to run")
    progress.save()
    j = jobs.Jobs(provider.endpoint())
    for repeat, n in todo:
        progress.runs.append(run_point(provider, j, n, repeat, work, plan.job_timeout, say))
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
    if work.kind == "bundled" and "joblib" not in plan.baselines:
        calibration = calibrate(progress, job_args, n_jobs, job_dir, say)
    metric = work.metric(runs)
    points = summarise(runs, metric["mode"], work.columns)
    clean = clean_points(points)
    from rayscale import fit as fitmod  # numpy and scipy: the study extra, checked by StudyPlan

    study = {
        "provider": provider.name,
        # The bundled job's args (what the replay reads its scheduler from); a script's
        # command is in `workload`, and it is replayed as measured.
        "job_args": job_args,
        "workload": work.describe(runs),
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
        "data": work.data(),
        "search_note": work.search_note(),
    }
    # What was measured is written before anything is derived from it: a prediction
    # that fails costs one warning, never the study.
    study["prediction"] = None
    write_outputs(study, runs, out, work.columns)
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
