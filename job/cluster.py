"""The cluster the job runs on: joining it, its worker nodes, whether a trial fits,
node-loss errors."""

from __future__ import annotations

import os

import train
import tune_format
from data import InputError


def join_ray() -> None:
    import ray
    import ray.cloudpickle

    if ray.is_initialized():
        return

    # What runs on the workers (the trainable, the final fit) goes to them by value: a job
    # whose code is already on the nodes is submitted without a working_dir, and a runtime
    # env of any kind costs every worker process it starts ~0.7 s here (docs/benchmarks.md).
    ray.cloudpickle.register_pickle_by_value(train)

    if os.environ.get("RAY_ADDRESS"):  # inside a job: join the cluster
        ray.init(logging_level="WARNING", log_to_driver=False)
    else:  # from a shell: a private single-node Ray for this run
        ray.init(logging_level="WARNING", log_to_driver=False, include_dashboard=False)


def cluster_size() -> dict:
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    return {
        "nodes": len(nodes),
        "cpus": sum(n["Resources"].get("CPU", 0) for n in nodes),
        "worker_nodes": sum(1 for n in nodes if n["Resources"].get("CPU", 0) > 0),
    }


def node_lost(e: BaseException) -> bool:
    """The trial's process or node died under it (not an error of the trial's own)."""
    from ray import exceptions as rx

    lost = (
        rx.RayActorError,
        rx.WorkerCrashedError,
        rx.NodeDiedError,
        rx.LocalRayletDiedError,
        rx.OwnerDiedError,
    )
    names = {c.__name__ for c in lost} | set(tune_format.LOST_NODE_ERRORS)
    # Tune hands back the exception itself, or a TuneError carrying its text.
    return isinstance(e, lost) or any(n in str(e) for n in names)


def trial_error(e: BaseException) -> str:
    """The cause of a trial's error in one line: Ray's task errors open with a header
    (`ray::ImplicitFunc.train() (pid=...)`) and end with the exception itself."""
    import re

    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", ln)]
    return ((raised or lines or [type(e).__name__])[-1])[:300]


def trial_resources(a) -> dict:
    out = {"cpu": a.cpus_per_trial}
    if a.memory_per_trial:
        out["memory"] = int(a.memory_per_trial * 2**30)
    return out


def worker_nodes() -> list[dict]:
    """The alive nodes that run trials (the head has no CPUs for them)."""
    import ray

    return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]


def trial_slots(resources: dict, nodes: list[dict]) -> int:
    """How many trials the workers can run at once."""
    return max(1, sum(int(n["Resources"]["CPU"] // resources["cpu"]) for n in nodes))


def check_fits(resources: dict, nodes: list[dict]) -> None:
    """Refuse a trial no worker can host: Tune would wait for it forever."""
    if not nodes:
        return
    fits = [
        n
        for n in nodes
        if n["Resources"].get("CPU", 0) >= resources["cpu"]
        and n["Resources"].get("memory", 0) >= resources.get("memory", 0)
    ]
    if not fits:
        big = max(
            nodes, key=lambda n: (n["Resources"].get("CPU", 0), n["Resources"].get("memory", 0))
        )
        asked = f"{resources['cpu']} CPUs" + (
            f" and {resources['memory'] / 2**30:g} GiB" if "memory" in resources else ""
        )
        raise InputError(
            f"a trial asks for {asked}, but the biggest worker has {big['Resources'].get('CPU', 0):g} "
            f"CPUs and {big['Resources'].get('memory', 0) / 2**30:.1f} GiB; lower --cpus-per-trial / "
            "--memory-per-trial or add bigger workers"
        )
