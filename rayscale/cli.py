"""The `rayscale` command: parse options, call one function, print. No logic here."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import click

from rayscale import (
    __version__,
    connect,
    download,
    eta,
    interrupts,
    jobs,
    lifecycle,
    plan,
    prices,
    providers,
    report,
    scaling,
    tune_output,
)
from rayscale.cli_options import (
    WorkerCount,
    WorkerList,
    address_options,
    env_option,
    provider_options,
    ray_submit_options,
    shape_options,
    state_option,
    working_dir_option,
)
from rayscale.errors import UserError
from rayscale.providers import rayjob as rayjobs
from rayscale.study import plan as study_plan


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rayscale")
def cli():
    """Stand up a Ray cluster, run the XGBoost tuning job on it, and measure its scaling."""


# ---- cluster ----------------------------------------------------------------------------


@cli.group()
def cluster():
    """Create, resize, inspect and remove a cluster."""


_TIMEOUT_HELP = (
    "seconds to wait for the workers [default 180; kuberay / kind 600; ray-up on a cloud 900]"
)


@cluster.command("up")
@provider_options
@click.option("--workers", type=WorkerCount(), default=2, show_default=True)
@shape_options
@click.option("--timeout", type=click.FloatRange(min=1), default=None, help=_TIMEOUT_HELP)
@click.option(
    "--dry-run",
    is_flag=True,
    help="print what up would create (the commands, manifests or launcher YAML, with the "
    "shape and resources) and create nothing",
)
@state_option
def cluster_up(provider, workers, timeout, dry_run, state, **options):
    """Start a head node (no trials) and WORKERS worker nodes."""
    p = providers.get(provider, state, **options)  # each provider takes only its own
    if dry_run:
        report.show_sections(p.dry_run(workers))
        return
    t0 = time.perf_counter()
    lifecycle.up(p, workers, timeout)
    report.say(
        f"cluster up in {time.perf_counter() - t0:.1f} s: {workers} workers · "
        f"dashboard and Job API {p.endpoint().url} · token {state.token_file}"
    )


@cluster.command("scale")
@click.option("--workers", type=WorkerCount(), required=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=None, help=_TIMEOUT_HELP)
@state_option
def cluster_scale(workers, timeout, state):
    """Add or remove worker nodes until WORKERS are alive."""
    t0 = time.perf_counter()
    with state.lock():
        providers.recorded(state).scale(workers, timeout)
    report.say(f"{workers} workers alive ({time.perf_counter() - t0:.1f} s)")


@cluster.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@state_option
def cluster_status(as_json, state):
    """List the cluster's nodes: state, CPUs, memory."""
    report.show_cluster(providers.recorded(state).status(), as_json)


@cluster.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@state_option
def cluster_list(as_json, state):
    """List every cluster recorded in the state dir (--cluster is ignored)."""
    report.show_clusters(lifecycle.listing(state), as_json)


@cluster.command("down")
@click.option(
    "--delete-results",
    is_flag=True,
    help="also delete the results storage the kit made (docker volume, kind folder, "
    "Kubernetes claim); kept by default, for `job resume` and `job results`",
)
@click.option(
    "--forget",
    is_flag=True,
    help="clear the record without reaching the cluster (it is gone for good); what it "
    "made is not stopped",
)
@state_option
def cluster_down(delete_results, forget, state):
    """Stop exactly what `cluster up` started and remove its temp dirs; a step that fails
    keeps the record, names what may still run, and exits non-zero: run it again."""
    if not state.read():
        report.say(f"no cluster recorded in {state.path}; nothing to do")
        return
    with state.lock():
        providers.recorded(state).down(delete_results=delete_results, forget=forget)
    report.say("record cleared; nothing was stopped" if forget else "cluster down")


# ---- job --------------------------------------------------------------------------------


@cli.group()
def job():
    """Submit the tuning job through Ray Job Submission and follow it."""


@job.command("submit", context_settings={"ignore_unknown_options": True})
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the result record as JSON")
@click.option(
    "--save",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="write the result record here [default: results/<run name>.json]",
)
@click.option("--timeout", type=click.FloatRange(min=1), default=None, help="seconds to wait")
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
        report.say(f"{job_id} {j.follow(job_id, timeout, print)}", err=True)
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
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the result record as JSON")
@click.option(
    "--save",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="write the result record here [default: results/<run name>.json]",
)
@click.option("--timeout", type=click.FloatRange(min=1), default=None, help="seconds to wait")
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


# ---- scaling ----------------------------------------------------------------------------


@cli.command("scaling", context_settings={"ignore_unknown_options": True})
@provider_options
@click.option(
    "--workers",
    type=WorkerList(),
    default="1,2",
    show_default=True,
    help="worker counts to measure, e.g. 1,2,4",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="runs per point (order interleaved across repeats)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="output dir [default: results/scaling-<time>, env RAYSCALE_RESULTS_DIR for results/]",
)
@click.option(
    "--baselines",
    default=None,
    help="no-cluster baselines on the same configs: sequential, joblib, or none "
    "[default: both for the bundled job, none with --working-dir]",
)
@working_dir_option
@click.option(
    "--experiment-path",
    multiple=True,
    help="with --working-dir: where the script's Tune run writes, on the head, if it sets "
    "RunConfig(storage_path=...) [default: Tune's ~/ray_results]",
)
@click.option(
    "--metric", default=None, help="with --working-dir: the metric, where Tune's has none"
)
@click.option(
    "--mode",
    type=click.Choice(["min", "max"]),
    default=None,
    help="with --working-dir: the metric's mode, where Tune's has none",
)
@shape_options
@click.option("--timeout", type=click.FloatRange(min=1), default=None, help="seconds per job")
@click.option(
    "--resume",
    type=click.Path(file_okay=False),
    default=None,
    help="the --out folder of an interrupted study: run only what it has not finished",
)
@state_option
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
def scaling_cmd(
    provider,
    workers,
    repeats,
    out,
    baselines,
    working_dir,
    experiment_path,
    metric,
    mode,
    timeout,
    resume,
    state,
    job_args,
    **options,
):
    """Measure how the job's time falls as workers are added; fit and plot the curve. The
    job: the bundled search with JOB_ARGS after --, or, with --working-dir DIR, any Tune
    script's command after --, e.g. -- python my_tune.py."""
    ctx = click.get_current_context()
    plan_options = ("workers", "repeats", "baselines", "out", "timeout", "working_dir")
    plan_options += ("experiment_path", "metric", "mode")
    given = [
        f"--{name.replace('_', '-')}"
        for name in plan_options
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    ] + (["the job args"] if job_args else [])
    default_baselines = "none" if working_dir else "sequential,joblib"
    plan = study_plan.StudyPlan(
        workers,
        repeats,
        study_plan.parse_baselines(baselines or default_baselines),
        list(job_args),
        timeout,
        working_dir,
        list(experiment_path),
        metric,
        mode,
    )
    progress = study_plan.progress_for(provider, plan, out, resume, given)
    p = providers.get(provider, state, **options)
    p.check_fits(max(progress.plan.workers))
    with scaling.cluster_for(p, progress.plan.workers[0], report.say):
        study = scaling.run(p, progress, report.say)
    report.show_study(study, progress.out)


@cli.command("plan")
@click.option(
    "--study",
    "study_path",
    type=click.Path(dir_okay=False),
    required=True,
    help="a study.json from `rayscale scaling` / `make bench`",
)
@click.option(
    "--workers",
    type=WorkerList(),
    default="1,2,4,8,16,32,64",
    show_default=True,
    help="worker counts to predict",
)
@click.option(
    "--num-samples", type=int, default=None, help="configs to search [default: as measured]"
)
@click.option(
    "--instance",
    default=None,
    help="a worker instance type, priced from --prices (or the built-in table: "
    f"{', '.join(prices.BUILTIN)}); `cheapest`: the type whose plan costs least within "
    "--deadline, with the next cheapest",
)
@click.option(
    "--prices",
    "prices_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="a price catalog in SkyPilot's catalog CSV format (InstanceType, vCPUs, MemoryGiB, "
    "Price, SpotPrice, Region, ...) [default: the built-in table of 2025]",
)
@click.option("--region", default=None, help="with --prices: price the types in this region")
@click.option("--cpus-per-worker", type=float, default=None, help="[default: as in the study]")
@click.option("--price", type=float, default=None, help="USD per worker-hour")
@click.option("--head-price", type=float, default=None, help="USD per head-hour [default: --price]")
@click.option(
    "--workers-per-node",
    type=int,
    default=1,
    show_default=True,
    help="workers sharing one machine, e.g. worker pods packed on a Kubernetes node: their "
    "trials slow each other as the study's host contention says",
)
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="an instance core's speed relative to the study's (an assumption)",
)
@click.option("--deadline", default=None, help="e.g. 10m: mark the cheapest count that meets it")
@click.option(
    "--scheduler",
    type=click.Choice(["fifo", "asha"]),
    default=None,
    help="replay this scheduler on the study's trials [default: the study's]",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="write plan.json / plan.csv / plan.png here",
)
@click.option(
    "--driver-from",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="take Tune's driver's cost from this study.json where --study has none "
    "(e.g. results/scale/study/study.json)",
)
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
def plan_cmd(
    study_path,
    workers,
    num_samples,
    instance,
    cpus_per_worker,
    price,
    head_price,
    workers_per_node,
    speed,
    deadline,
    scheduler,
    out,
    driver_from,
    as_json,
    prices_path,
    region,
):
    """Predict the search's time and cost on N workers from a measured study."""
    table, summary = plan.make(
        Path(study_path),
        workers,
        instance,
        cpus_per_worker,
        price,
        head_price,
        num_samples,
        speed,
        deadline,
        scheduler,
        Path(driver_from) if driver_from else None,
        workers_per_node,
        Path(prices_path) if prices_path else None,
        region,
    )
    written = plan.write(table, summary, Path(out)) if out else []
    report.show_plan(table, summary, written, as_json)


def main() -> None:
    interrupts.install()
    try:
        cli.main(standalone_mode=False, prog_name="rayscale")
    except UserError as e:
        report.error_line(e.line())
        sys.exit(e.exit_code)
    except click.ClickException as e:
        report.error_line(e.format_message())
        sys.exit(e.exit_code)
    except (click.Abort, KeyboardInterrupt) as e:
        # click turns KeyboardInterrupt into Abort, the signal's kind kept as its cause.
        term = e if isinstance(e, interrupts.Terminated) else e.__cause__
        if isinstance(term, interrupts.Terminated):
            report.error_line("terminated" if term.signum == signal.SIGTERM else "hung up")
            sys.exit(128 + term.signum)
        report.error_line("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
