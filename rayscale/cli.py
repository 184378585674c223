"""The `rayscale` command: parse options, call one function, print. No logic here."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click

from rayscale import (
    __version__,
    cli_job,
    interrupts,
    lifecycle,
    plan,
    prices,
    providers,
    report,
    scaling,
)
from rayscale.cli_options import (
    WorkerCount,
    WorkerList,
    provider_options,
    shape_options,
    state_option,
    working_dir_option,
)
from rayscale.errors import UserError
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


cli.add_command(cli_job.job)


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
