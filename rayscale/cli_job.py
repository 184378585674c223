"""`rayscale job ...`: submit, follow, resume and read jobs through Ray Job Submission.
Parses options and calls one function each, as cli.py does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from rayscale import connect, download, eta, jobs, providers, report, tune_output
from rayscale.cli_options import (
    address_options,
    env_option,
    follow_options,
    ray_submit_options,
    working_dir_option,
)
from rayscale.errors import UserError
from rayscale.providers import rayjob as rayjobs

# ---- job --------------------------------------------------------------------------------


@click.group()
def job():
    """Submit the tuning job through Ray Job Submission and follow it."""


@job.command("submit", context_settings={"ignore_unknown_options": True})
@follow_options
@click.option(
    "--job-dir",
    default=None,
    help="the job folder shipped as working_dir [default: the kit's job/]",
)
@working_dir_option
@click.option(
    "--rayjob",
    is_flag=True,
    help="kuberay / kind: submit as a RayJob on the running RayCluster (KubeRay's submitter "
    "runs it in the cluster; no port-forward)",
)
@click.option("--dry-run", is_flag=True, help="with --rayjob: print the RayJob and create nothing")
@click.option(
    "--download",
    "dest",
    type=click.Path(file_okay=False),
    default=None,
    help="at the end, copy the job's Tune experiment here (as `job results --download`)",
)
@click.option(
    "--price-per-hour",
    type=click.FloatRange(min=0),
    default=None,
    metavar="USD",
    help="what the cluster costs an hour: the progress shows the money spent and at the ETA",
)
@env_option
@ray_submit_options
@address_options
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
def job_submit(
    wait,
    as_json,
    save,
    timeout,
    job_dir,
    working_dir,
    rayjob,
    dry_run,
    dest,
    price_per_hour,
    env,
    ray,
    address,
    token_file,
    state,
    job_args,
):
    """Submit the bundled job with JOB_ARGS after --, e.g. -- --num-samples 8; or, with
    --working-dir DIR, any command after --, e.g. -- python my_tune.py."""
    if dry_run and not rayjob:
        raise UserError(
            "--dry-run prints the RayJob that --rayjob would create",
            "add --rayjob (a Job API submission creates nothing to print)",
        )
    if dest and not wait:
        raise UserError(
            "--download copies the job's results when it ends", "drop --no-wait, or --download"
        )
    if rayjob:
        if working_dir or job_dir or env or address or not wait or ray.given() or dest:
            raise UserError(
                "--rayjob runs the image's bundled job on the recorded cluster",
                "drop --working-dir, --job-dir, --env, --address, --no-wait, --download and "
                f"{', '.join(ray.given()) or 'the `ray job submit` flags'} with it",
            )
        provider = providers.recorded(state)
        if dry_run:
            print(rayjobs.preview(provider, list(job_args)), end="")
            return
        rec = rayjobs.submit_on(provider, list(job_args), timeout, report.job_line)
        _show(rec, as_json, save)
        return
    j = jobs.Jobs(connect.endpoint(address, token_file, state))
    if working_dir:
        if job_dir or as_json or save:
            raise UserError(
                "--job-dir, --json and --save are the bundled job's",
                "drop them with --working-dir (its Tune output is on the cluster)",
            )
        job_id = j.submit_command(
            list(job_args), Path(working_dir), env=jobs.env_vars(env), ray=ray
        )
        if not wait:
            print(job_id)
            return
        report.say(f"submitted {job_id}; following its log (Ctrl-C stops following)", err=True)
        report.say(f"{job_id} {j.follow(job_id, timeout, report.log_with_eta())}", err=True)
        for line in tune_output.written_lines(j, job_id):
            report.say(line, err=True)
        if dest:
            _download(j, download.experiment_of_job(j, job_id, []), dest)
        return
    job_id = j.submit(list(job_args), job_dir, env=jobs.env_vars(env), ray=ray)
    if not wait:
        print(job_id)
        return
    report.say(f"submitted {job_id}; following it (Ctrl-C stops following, not the job)", err=True)
    _follow(j, job_id, as_json, timeout, save, price_per_hour)
    if dest:
        _download(j, download.experiment_of_job(j, job_id, []), dest)


def _follow(j: jobs.Jobs, job_id: str, as_json: bool, timeout, save=None, price=None) -> None:
    with report.trial_progress(job_id, not as_json, price) as on_progress:
        status = j.wait(job_id, timeout, on_progress)
    _show(j.result(job_id, status), as_json, save)


def _show(rec: dict, as_json: bool, save) -> None:
    if as_json:
        print(json.dumps(rec))
    else:
        report.show_result(rec)
    report.say(f"result record saved to {report.save_result(rec, save)}", err=True)


@job.command("resume", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@follow_options
@env_option
@address_options
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
def job_resume(name, wait, as_json, save, timeout, env, address, token_file, state, job_args):
    """Resume search NAME (e.g. after the head died) with its original JOB_ARGS after --."""
    j = jobs.Jobs(connect.endpoint(address, token_file, state))
    job_id = j.resume(name, list(job_args), env=jobs.env_vars(env))
    if not wait:
        print(job_id)
        return
    report.say(f"resuming {name} as {job_id}", err=True)
    _follow(j, job_id, as_json, timeout, save)


@job.command("results")
@click.argument("ident", metavar="ID|NAME")
@click.option(
    "--download",
    "dest",
    type=click.Path(file_okay=False),
    default=None,
    help="copy the job's Tune experiment here (every trial's rows and params, the best "
    "checkpoint, rayscale-result.json), from any provider's head",
)
@click.option(
    "--experiment-path",
    multiple=True,
    help="a script's: where its Tune run writes on the head, if it sets "
    "RunConfig(storage_path=...) [default: Tune's ~/ray_results]",
)
@click.option(
    "--storage-path",
    default=None,
    help="with a run NAME: the bundled job's --storage-path [default: the job's]",
)
@click.option("--json", "as_json", is_flag=True, help="print the result record as JSON")
@address_options
def job_results(ident, dest, experiment_path, storage_path, as_json, address, token_file, state):
    """Show job ID's result record, or its Tune output; with --download, bring its Tune
    experiment (or run NAME's, the bundled job's --name) to this machine."""
    j = jobs.Jobs(connect.endpoint(address, token_file, state))
    if dest is None:
        info = j.info(ident)
        if "tune_xgboost.py" in info.entrypoint:
            _show(j.result(ident, info.status), as_json, None)
        else:
            for line in tune_output.written_lines(j, ident):
                print(line)
        return
    _download(j, download.experiment_of(j, ident, list(experiment_path), storage_path), dest)


def _download(j: jobs.Jobs, exp_path: str, dest: str) -> None:
    with report.byte_progress("downloading") as on_bytes:
        done = download.download(j, exp_path, Path(dest), on_bytes)
    report.show_download(done)


@job.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="the status, trials and ETA as JSON")
@address_options
def job_status(job_id, as_json, address, token_file, state):
    """Print a job's status; while the bundled search runs, its trials and ETA."""
    j = jobs.Jobs(connect.endpoint(address, token_file, state))
    status = j.status(job_id)
    guess = eta.from_log(j.logs(job_id)).estimate() if status == "RUNNING" else None
    report.show_status(job_id, status, guess, as_json)


@job.command("logs")
@click.argument("job_id")
@click.option(
    "--follow", "-f", is_flag=True, help="stream the log until the job ends (`ray job logs -f`)"
)
@address_options
def job_logs(job_id, follow, address, token_file, state):
    """Print a job's log."""
    j = jobs.Jobs(connect.endpoint(address, token_file, state))
    if follow:
        report.say(f"{job_id} {j.wait(job_id, on_log=report.log_with_eta())}", err=True)
    else:
        sys.stdout.write(j.logs(job_id))


@job.command("stop")
@click.argument("job_id")
@address_options
def job_stop(job_id, address, token_file, state):
    """Stop a running job."""
    stopped = jobs.Jobs(connect.endpoint(address, token_file, state)).stop(job_id)
    print(f"{job_id}: {'stop requested' if stopped else 'not running'}")


@job.command("delete")
@click.argument("job_id")
@address_options
def job_delete(job_id, address, token_file, state):
    """Delete an ended job's record and log from the cluster (`ray job delete`)."""
    jobs.Jobs(connect.endpoint(address, token_file, state)).delete(job_id)
    print(f"{job_id}: deleted")


@job.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the jobs as JSON")
@address_options
def job_list(as_json, address, token_file, state):
    """List the cluster's jobs and their final states."""
    rows = jobs.Jobs(connect.endpoint(address, token_file, state)).list()
    report.show_jobs(rows, as_json)
