"""A node's spec -> the exact `ray start` arguments and environment: the one place the kit
writes Ray's flags.

Every provider starts the same Ray from here: the local provider's processes, the docker
provider's containers, Ray's fake multi-node head, the cluster-launcher YAMLs' start
commands (cluster/*.yaml, `write_cluster_yamls`) and KubeRay's `rayStartParams` and
container env (rayscale.manifests). Only documented `ray start` flags and documented
environment variables; nothing patched, nothing hidden.

A provider fills in where the node runs (ports, temp dir, the head's address); the shape of
the Ray it starts is decided here: the head runs no trials (num-cpus 0) and has explicit
memory and object-store sizes (a raylet otherwise claims the whole host), the dashboard and
Job API listen where the provider says (loopback outside containers), token auth is on and
usage stats are off on every node.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
# The head runs the Job API, the job's driver and Tune's controller, no trials.
HEAD_MEMORY_GIB = 1.0
HEAD_OBJECT_STORE_GIB = 0.25
# Where containers and VMs listen (the defaults of `ray start` and KubeRay).
GCS_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001

# Every node's environment: token auth on (Ray 2.60 leaves it off unless told), no usage
# stats sent home (both documented: Ray's auth and usage-stats pages).
NODE_ENV = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
# The head of Ray's fake multi-node provider (ray-up on this machine, cluster/local-
# autoscale.yaml): its autoscaler launches worker raylets as local processes.
FAKE_CLUSTER_ENV = {"RAY_FAKE_CLUSTER": "1"}

# Flags a KubeRay pod gets from the operator itself (pod.go: --head, --address, --block,
# and the GCS port); rayStartParams must not set them.
OPERATOR_FLAGS = ("head", "address", "block", "port")


@dataclass(frozen=True)
class NodeSpec:
    """One Ray node. None leaves a flag to Ray (or, on Kubernetes, to KubeRay, which sizes
    nodes from the container's limits)."""

    role: str  # "head" | "worker"
    cpus: float | None = None  # the head is always 0
    memory_bytes: int | None = None
    object_store_bytes: int | None = None
    head_address: str | None = None  # a worker's GCS address, host:port
    port: int | None = None  # the head's GCS port
    dashboard_host: str | None = None  # the head's dashboard and Job API
    dashboard_port: int | None = None
    node_name: str | None = None  # how the State API names the node (providers find it by it)
    temp_dir: str | None = None  # several nodes on one host need one each
    ports: dict[str, int] = field(default_factory=dict)  # e.g. {"node-manager-port": 40001}
    block: bool = True  # in the foreground: its PID / the container's is the node's
    extra: tuple[str, ...] = ()  # documented flags a provider adds (--autoscaling-config)


def head(
    *,
    port: int | None = GCS_PORT,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int | None = DASHBOARD_PORT,
    sized: bool = True,
    **kw,
) -> NodeSpec:
    """The head: no trials; its own sizes unless the platform sizes it (Kubernetes)."""
    sizes = (
        {
            "memory_bytes": int(HEAD_MEMORY_GIB * GIB),
            "object_store_bytes": int(HEAD_OBJECT_STORE_GIB * GIB),
        }
        if sized
        else {}
    )
    return NodeSpec(
        "head",
        cpus=0,
        port=port,
        dashboard_host=dashboard_host,
        dashboard_port=dashboard_port,
        **sizes,
        **kw,
    )


def worker(head_address: str | None, **kw) -> NodeSpec:
    return NodeSpec("worker", head_address=head_address, **kw)


def _flags(spec: NodeSpec) -> list[tuple[str, str | None]]:
    """(flag, value) pairs in `ray start`'s order; value None is a bare flag."""
    out: list[tuple[str, str | None]] = []
    if spec.role == "head":
        out.append(("head", None))
        if spec.port is not None:
            out.append(("port", str(spec.port)))
    elif spec.head_address:
        out.append(("address", spec.head_address))
    if spec.cpus is not None:
        out.append(("num-cpus", f"{spec.cpus:g}"))
    if spec.memory_bytes is not None:
        out.append(("memory", str(spec.memory_bytes)))
    if spec.object_store_bytes is not None:
        out.append(("object-store-memory", str(spec.object_store_bytes)))
    if spec.role == "head":
        out.append(("include-dashboard", "true"))
        if spec.dashboard_host:
            out.append(("dashboard-host", spec.dashboard_host))
        if spec.dashboard_port is not None:
            out.append(("dashboard-port", str(spec.dashboard_port)))
    if spec.node_name:
        out.append(("node-name", spec.node_name))
    if spec.temp_dir:
        out.append(("temp-dir", spec.temp_dir))
    out += [(k, str(v)) for k, v in spec.ports.items()]
    if spec.block:
        out.append(("block", None))
    for e in spec.extra:
        k, _, v = e.lstrip("-").partition("=")
        out.append((k, v or None))
    return out


def start_args(spec: NodeSpec) -> list[str]:
    """`ray start`'s arguments for the node (after the `ray` executable)."""
    return ["start", *(f"--{k}" if v is None else f"--{k}={v}" for k, v in _flags(spec))]


def node_env(token: str | None = None, token_path: str | None = None) -> dict[str, str]:
    """The environment every node runs under: NODE_ENV, and the token where the provider
    hands it over (a file on this machine, or the value in a container's env)."""
    env = dict(NODE_ENV)
    if token_path:
        env["RAY_AUTH_TOKEN_PATH"] = token_path
    elif token:
        env["RAY_AUTH_TOKEN"] = token
    return env


def start_params(spec: NodeSpec) -> dict[str, str]:
    """KubeRay's `rayStartParams` for the node: the same flags, less those the operator
    writes itself and the bare ones (KubeRay passes every key as `--key=value`)."""
    return {k: v for k, v in _flags(spec) if k not in OPERATOR_FLAGS and v is not None}


def shell_command(spec: NodeSpec, env: dict[str, str] | None = None) -> str:
    """One shell line that starts the node (the cluster launcher's start commands, where
    the launcher exports $RAY_HEAD_IP: left unquoted so the shell expands it)."""
    return shell_join([*(f"{k}={v}" for k, v in (env or {}).items()), "ray", *start_args(spec)])


def shell_join(words: list[str]) -> str:
    """A shell line of these words, quoted only where needed ($NAME left for the shell)."""
    return " ".join(w if _SHELL_SAFE.fullmatch(w) else shlex.quote(w) for w in words)


_SHELL_SAFE = re.compile(r"[\w@%+=:,./~$-]+")


# ---- the cluster launcher's YAMLs (cluster/*.yaml) ---------------------------------------

# The launcher fills in the head's address; file descriptors are raised as Ray's examples do.
LAUNCHER_PREFIX = "ulimit -n 65536; "
# The token every container reads (the YAMLs mount ~/.ray/auth_token there).
LAUNCHER_TOKEN_PATH = "/home/ray/.ray/auth_token"
# Per file: the documented flags it adds on both node types (a fixed object-manager port
# where a cloud firewall opens only named ports).
LAUNCHER_FILES = {
    "aws.yaml": {"object-manager-port": 8076},
    "gcp.yaml": {"object-manager-port": 8076},
    "onprem.yaml": {},
}


def launcher_commands(ports: dict[str, int]) -> dict[str, list[str]]:
    """`head_start_ray_commands` and `worker_start_ray_commands` of a launcher YAML."""
    env = dict(NODE_ENV)
    h = head(
        dashboard_port=None,
        sized=False,
        ports=ports,
        block=False,
        extra=("--autoscaling-config=~/ray_bootstrap_config.yaml",),
    )
    w = worker(f"$RAY_HEAD_IP:{GCS_PORT}", ports=ports, block=False)
    return {
        "head_start_ray_commands": ["ray stop", LAUNCHER_PREFIX + shell_command(h, env)],
        "worker_start_ray_commands": ["ray stop", LAUNCHER_PREFIX + shell_command(w, env)],
    }


_START_BLOCK = re.compile(r"^head_start_ray_commands:.*\Z", re.S | re.M)


# The `--env` run options of a YAML's docker block: the container's own environment.
_ENV_OPTIONS = re.compile(r"^(    - --env RAY_\w+=.*\n)+", re.M)


def container_env() -> dict[str, str]:
    """What a launcher YAML's containers run under: every node's environment, and where
    their token is."""
    return {**NODE_ENV, "RAY_AUTH_TOKEN_PATH": LAUNCHER_TOKEN_PATH}


def launcher_yaml(text: str, name: str) -> str:
    """A launcher YAML's text with its start commands and its containers' environment as
    generated (the rest, comments included, as written)."""
    cmds = launcher_commands(LAUNCHER_FILES[name])
    block = "".join(
        f"{key}:\n" + "".join(f"  - {_yaml_str(c)}\n" for c in lines) for key, lines in cmds.items()
    )
    if not _START_BLOCK.search(text):
        raise ValueError(f"{name}: no head_start_ray_commands block to replace")
    env = "".join(f"    - --env {k}={v}\n" for k, v in container_env().items())
    text = _ENV_OPTIONS.sub(lambda _: env, text)
    return _START_BLOCK.sub(lambda _: block, text)


def _yaml_str(s: str) -> str:
    import json

    return json.dumps(s) if any(c in s for c in ":#{}[]'\"$~") else s


def write_cluster_yamls(root: str | Path) -> list[Path]:
    """Rewrite cluster/*.yaml's start commands from this module (`make cluster-yamls`)."""
    out = []
    for name in LAUNCHER_FILES:
        f = Path(root) / "cluster" / name
        new = launcher_yaml(f.read_text(), name)
        if new != f.read_text():
            f.write_text(new)
        out.append(f)
    return out
