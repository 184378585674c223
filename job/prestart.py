"""Trial processes started while the driver loads the data.

A Tune trial is an actor, and a fresh actor process costs 1.1-1.4 s here before the trial
can start (docs/benchmarks.md). Each worker node's raylet can start idle worker
processes for a job ahead of demand (`NodeManagerService.PrestartWorkers`, the RPC Ray's
own core worker sends; Ray 2.60 has no public Python call for it): asked for at the
driver's start, they are up by the time Tune places its trials, and the trial actors take
them. A raylet gives an actor only a worker started for the same runtime env, and Tune
gives every trial actor one (`env_vars`: PL_DISABLE_FORK and what it propagates from the
driver's environment, `ray.tune.execution.class_cache`): the workers are asked for with
that same env, built the way Tune builds it. Only for a job without a runtime env of its
own (the local and docker providers' jobs): the actors' env would be merged with it.

Best effort: whatever fails is one line in the log, and the trials start their own
processes as they would have.
"""

from __future__ import annotations

KEEP_ALIVE_S = 120  # long enough for a data load; idle after it, the raylet reaps them


def trial_env_info():
    """The runtime env info of Tune's trial actors, as their creation serialises it."""
    import os

    from ray._private.utils import get_runtime_env_info
    from ray.runtime_env import RuntimeEnv
    from ray.tune.execution.class_cache import DEFAULT_ENV_VARS, ENV_VARS_TO_PROPAGATE

    env_vars = dict(DEFAULT_ENV_VARS)
    env_vars.update({k: os.environ[k] for k in ENV_VARS_TO_PROPAGATE if k in os.environ})
    return get_runtime_env_info(RuntimeEnv(env_vars=env_vars), is_job_runtime_env=False)


def trial_workers(cpus_per_trial: float, keep_alive_s: int = KEEP_ALIVE_S) -> int:
    """Ask every alive worker node for one process per trial slot; the number asked for."""
    import ray

    ctx = ray.get_runtime_context()
    if ctx.runtime_env:
        return 0
    try:
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import common_pb2
        from ray.core.generated import node_manager_pb2 as nm
        from ray.core.generated import node_manager_pb2_grpc as nm_grpc

        env_info = trial_env_info()
    except ImportError as e:  # another Ray: the trials start their own processes
        print(f"trial processes not started early ({e})", flush=True)
        return 0
    job = bytes.fromhex(ctx.get_job_id())
    asked = 0
    for node in ray.nodes():
        slots = int(node["Resources"].get("CPU", 0) // cpus_per_trial) if node["Alive"] else 0
        if slots < 1:
            continue
        req = nm.PrestartWorkersRequest(
            language=common_pb2.PYTHON,
            job_id=job,
            keep_alive_duration_secs=keep_alive_s,
            num_workers=slots,
        )
        req.runtime_env_info.CopyFrom(env_info)
        address = f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
        channel = init_grpc_channel(address)  # with the cluster's token where auth is on
        try:
            nm_grpc.NodeManagerServiceStub(channel).PrestartWorkers(req, timeout=5)
            asked += slots
        except Exception as e:  # noqa: BLE001 - best effort, never the job's failure
            print(f"trial processes not started early on {address} ({e})", flush=True)
        finally:
            channel.close()
    return asked
