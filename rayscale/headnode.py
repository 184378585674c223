"""`ray start` for the kit's nodes, with what `ray start` has no flag for: a lean head (only
the dashboard modules the Job API needs) and, on one machine, every port on loopback.

Ray's dashboard starts ten module subprocesses of ~100 MiB each (metrics, data, events,
nodes, serve, state, task events, train, ...). The Job API needs one of them, JobHead.
dashboard.py takes --modules-to-load; this wrapper adds it when RAYSCALE_DASHBOARD_MODULES
is set. RAYSCALE_LOOPBACK keeps a node's address at 127.0.0.1 (see _keep_loopback). Then
it runs the real `ray start` in this process (so the recorded PID is the node's), without
the CLI's command groups that `ray start` never uses (UNUSED_CLI_GROUPS).
"""

from __future__ import annotations

import os
import sys

# What the kit needs: the Job API (JobHead, which also serves /api/version) and NodeHead,
# which records the head node id that JobHead uses to find the head's job agent.
LEAN_MODULES = "JobHead,NodeHead,UsageStatsHead"
LOOPBACK = "127.0.0.1"
# The environment a loopback-only node runs under (see _keep_loopback).
LOOPBACK_ENV = {"RAYSCALE_LOOPBACK": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# `ray start` needs none of the other command groups Ray's CLI module adds as it loads, and
# Ray adds each only if it imports: Serve's (pandas, FastAPI), the state API's and the
# jobs CLI's are ~1 CPU-s of the 1.6 it takes to load, paid once per node at every up.
UNUSED_CLI_GROUPS = (
    "ray.serve.scripts",
    "ray.util.state.state_cli",
    "ray.dashboard.modules.job.cli",
)


def _patch(modules: str) -> None:
    from ray._private import node, ray_constants, services

    # No Ray Client server either: the kit submits through the Job API, and an unused
    # server is one more open port and one more Python process on a small head.
    node.Node.start_ray_client_server = lambda self: None

    original = services.start_ray_process

    def start_ray_process(command, process_type, *args, **kwargs):
        if process_type == ray_constants.PROCESS_TYPE_DASHBOARD:
            command = [*command, f"--modules-to-load={modules}"]
        return original(command, process_type, *args, **kwargs)

    services.start_ray_process = start_ray_process


def _keep_loopback() -> None:
    """Ray replaces 127.0.0.1 with the host's outward IP, where its gRPC servers (GCS,
    raylet, object manager, agents) then listen on every interface. Given 127.0.0.1 they
    listen on loopback only. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (set in the node's
    environment, inherited by the agents, workers and job drivers) keeps 127.0.0.1 in every
    process Ray starts; `ray start` for a worker refuses to run under it, so here, in the
    node's own process, the address is kept and the refusal lifted."""
    from ray._private import ray_constants, services

    original = services.resolve_ip_for_localhost
    ray_constants.ENABLE_RAY_CLUSTER = True
    services.resolve_ip_for_localhost = lambda host: host if host == LOOPBACK else original(host)


def main() -> None:
    if os.environ.get("RAYSCALE_LOOPBACK"):
        _keep_loopback()
    modules = os.environ.get("RAYSCALE_DASHBOARD_MODULES")
    if modules:
        _patch(modules)
    for name in UNUSED_CLI_GROUPS:
        sys.modules[name] = None  # import raises ImportError: Ray's CLI skips that group
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *sys.argv[1:]]
    ray_main()


if __name__ == "__main__":
    main()
