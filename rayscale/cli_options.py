"""The flags several `rayscale` commands share, and the provider flags, built from what each
provider declares (rayscale.providers.flags)."""

from __future__ import annotations

import functools

import click

from rayscale import providers, submit_flags
from rayscale import state as state_mod
from rayscale.errors import UserError
from rayscale.state import StateDir


class WorkerCount(click.ParamType):
    name = "N"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            n = value
        else:
            try:
                n = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a whole number; pass e.g. --workers 2", param, ctx)
        if n < 1:
            self.fail(
                f"{value} must be at least 1 (the head runs no trials); pass e.g. --workers 2",
                param,
                ctx,
            )
        return n


class WorkerList(click.ParamType):
    name = "N,N,..."

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        parts = [p for p in str(value).split(",") if p.strip()]
        if not parts:
            self.fail("is empty; pass worker counts like 1,2,4", param, ctx)
        counts = [WorkerCount().convert(p, param, ctx) for p in parts]
        if len(set(counts)) != len(counts):
            self.fail(
                f"{value!r} repeats a count; use --repeats to run a point more than once",
                param,
                ctx,
            )
        return sorted(counts)


def _cluster_name(ctx, param, value):
    try:
        return state_mod.check_name(value)
    except UserError as e:
        raise click.BadParameter(e.line()) from None


def state_option(f):
    """--state-dir and --cluster, handed to the command as one `state`."""

    @functools.wraps(f)
    def command(*args, state_dir, cluster, **kwargs):
        return f(*args, state=StateDir(state_dir, cluster).pick(), **kwargs)

    command = click.option(
        "--cluster",
        "-c",
        envvar="RAYSCALE_CLUSTER",
        default=state_mod.DEFAULT_CLUSTER,
        show_default=True,
        callback=_cluster_name,
        help="which cluster of the state dir: several run side by side [env RAYSCALE_CLUSTER]",
    )(command)
    return click.option(
        "--state-dir",
        envvar="RAYSCALE_STATE_DIR",
        default=None,
        help="where clusters are recorded [env RAYSCALE_STATE_DIR, default .rayscale/]",
    )(command)


def env_option(f):
    return click.option(
        "--env",
        "env",
        multiple=True,
        metavar="NAME[=VALUE]",
        help="a variable for the job on every node, e.g. AWS_ENDPOINT_URL (repeatable; "
        "NAME alone takes its value here). Values go into the job's runtime_env, which Ray's "
        "agents log and any holder of the token reads: no secrets. Give credentials to the "
        "nodes instead (an IAM role or workload identity, a Kubernetes Secret in the pods' "
        "env, the image's)",
    )(f)


def ray_submit_options(f):
    """`ray job submit`'s own flags, by Ray's names, handed to the command as one `ray`."""

    @functools.wraps(f)
    def command(*args, **kwargs):
        names = ("runtime_env", "runtime_env_json", "submission_id", "metadata_json",
                 "entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory",
                 "entrypoint_resources")  # fmt: skip
        flags = {n: kwargs.pop(n) for n in names}
        return f(*args, ray=submit_flags.from_flags(**flags), **kwargs)

    for name, kind, what in reversed([
        ("--runtime-env", click.Path(dir_okay=False), "a YAML file of the job's runtime_env"),
        ("--runtime-env-json", str, "the job's runtime_env as JSON"),
        ("--submission-id", str, "the job's ID [default: Ray's raysubmit_...]"),
        ("--metadata-json", str, "the job's metadata as JSON, string values"),
        ("--entrypoint-num-cpus", click.FloatRange(min=0), "CPUs reserved for the driver"),
        ("--entrypoint-num-gpus", click.FloatRange(min=0), "GPUs reserved for the driver"),
        ("--entrypoint-memory", click.IntRange(min=0), "bytes of memory reserved for the driver"),
        ("--entrypoint-resources", str, "other resources reserved for the driver, as JSON"),
    ]):  # fmt: skip
        command = click.option(name, type=kind, default=None, help=f"{what} (as `ray job submit`)")(
            command
        )
    return command


def working_dir_option(f):
    return click.option(
        "--working-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="run the command after -- (e.g. python my_tune.py) with this folder as its "
        "working_dir, as `ray job submit` does",
    )(f)


def follow_options(f):
    """`job submit` and `job resume`: whether to follow the job, and what to show of it."""
    for option in reversed(
        (
            click.option("--wait/--no-wait", default=True, show_default=True),
            click.option("--json", "as_json", is_flag=True, help="print the result record as JSON"),
            click.option(
                "--save",
                type=click.Path(dir_okay=False, writable=True),
                default=None,
                help="write the result record here [default: results/<run name>.json]",
            ),
            click.option(
                "--timeout", type=click.FloatRange(min=1), default=None, help="seconds to wait"
            ),
        )
    ):
        f = option(f)
    return f


def address_options(f):
    f = click.option(
        "--token-file",
        default=None,
        help="file holding the cluster's auth token [env RAY_AUTH_TOKEN_PATH / RAY_AUTH_TOKEN]",
    )(f)
    f = click.option(
        "--address",
        default=None,
        help="dashboard / Job API URL of any Ray cluster [env RAY_API_SERVER_ADDRESS]",
    )(f)
    return state_option(f)


def shape_options(f):
    f = click.option(
        "--memory-per-worker",
        type=click.FloatRange(min=0.5),
        default=None,
        help=f"{', '.join(providers.shaped())}: GiB of memory per worker node [default 2]",
    )(f)
    f = click.option(
        "--cpus-per-worker",
        type=click.IntRange(min=1),
        default=None,
        help=f"{', '.join(providers.shaped())}: CPUs per worker node [default 1]",
    )(f)
    return f


def provider_options(f):
    """--provider, and every provider's own flags as it declares them (providers.flags)."""
    for name, declared in reversed(providers.flags()):
        f = click.option(
            "--" + name.replace("_", "-"),
            type=click.Choice(declared.choices) if declared.choices else None,
            default=None,
            envvar=declared.envvar,
            metavar=declared.metavar,
            help=declared.help,
        )(f)
    return click.option(
        "--provider",
        type=click.Choice(providers.NAMES),
        default="local",
        show_default=True,
        help="where the nodes run",
    )(f)
