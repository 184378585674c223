"""`ray start` for the head node, lean: only the dashboard modules the Job API needs.

Ray's dashboard starts ten module subprocesses of ~100 MiB each (metrics, data, events,
nodes, serve, state, task events, train, ...). The Job API needs one of them, JobHead.
`ray start` has no flag to choose, but dashboard.py takes --modules-to-load; this wrapper
adds it when RAYSCALE_DASHBOARD_MODULES is set, then runs the real `ray start` in this
process (so the recorded PID is still the node's `ray start`).
"""

from __future__ import annotations

import os
import sys

# What the kit needs: the Job API (JobHead, which also serves /api/version) and NodeHead,
# which records the head node id that JobHead uses to find the head's job agent.
LEAN_MODULES = "JobHead,NodeHead,UsageStatsHead"


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


def main() -> None:
    modules = os.environ.get("RAYSCALE_DASHBOARD_MODULES")
    if modules:
        _patch(modules)
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *sys.argv[1:]]
    ray_main()


if __name__ == "__main__":
    main()
