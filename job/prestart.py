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

The same for the next job's supervisor: Ray runs each submitted job under a supervisor
actor on the head, a fresh process that costs most of the 1.1-1.6 s from submission to
RUNNING here (docs/benchmarks.md). At its end the job asks its own node (the head, where
supervisors run) for one process with the supervisor's runtime env, for no job in
particular (a worker started for no job is given to any: the supervisor is created by the
dashboard agent's own connection, not by this job), kept for SUPERVISOR_KEEP_ALIVE_S. A
cluster's first job has none waiting.

And the next job's trial processes: a process started for a job serves that job only,
and one started within the job is ready ~2.3 s after the ask (start-up and the import of
Ray Tune, providers/base.py WORKER_ENV, while the driver loads the data on the same cores),
after the search has begun. So at its end a job asks every worker node for one process per
trial slot for no job in particular, with the trials' runtime env, and notes in the GCS
(internal KV) which nodes have them, until when. The next job takes the note: on those
nodes it asks for none, and its trial actors take the waiting processes.

Best effort: whatever fails is one line in the log, and the trials (or the supervisor)
start their own processes as they would have.
"""

from __future__ import annotations

import json
import time

KEEP_ALIVE_S = 120  # long enough for a data load; idle after it, the raylet reaps them
# Long enough for a scaling study's next point (a rescale, then the next submission);
# after it the head, which has no CPUs for workers, reaps the idle process.
SUPERVISOR_KEEP_ALIVE_S = 300
# The note of the processes a job left for the next one's trials (internal KV).
WAITING_KEY, WAITING_NS = b"trial-workers", b"rayscale"
# A note this close to its processes' end is not trusted: the raylet may reap them first.
WAITING_MARGIN_S = 30


def trial_env_info():
    """The runtime env info of Tune's trial actors, as their creation serialises it."""
    import os

    from ray._private.utils import get_runtime_env_info
    from ray.runtime_env import RuntimeEnv
    from ray.tune.execution.class_cache import DEFAULT_ENV_VARS, ENV_VARS_TO_PROPAGATE

    env_vars = dict(DEFAULT_ENV_VARS)
    env_vars.update({k: os.environ[k] for k in ENV_VARS_TO_PROPAGATE if k in os.environ})
    return get_runtime_env_info(RuntimeEnv(env_vars=env_vars), is_job_runtime_env=False)


def supervisor_env_info():
    """The runtime env info Ray's job manager gives a supervisor of a job submitted without
    a runtime env or resources (ray.dashboard.modules.job.job_manager,
    `_get_supervisor_runtime_env`)."""
    from ray._private import ray_constants
    from ray._private.accelerators.npu import NOSET_ASCEND_RT_VISIBLE_DEVICES_ENV_VAR
    from ray._private.accelerators.nvidia_gpu import NOSET_CUDA_VISIBLE_DEVICES_ENV_VAR
    from ray._private.utils import get_runtime_env_info
    from ray.runtime_env import RuntimeEnv

    env_vars = {
        ray_constants.RAY_WORKER_NICENESS: "0",
        NOSET_CUDA_VISIBLE_DEVICES_ENV_VAR: "1",
        NOSET_ASCEND_RT_VISIBLE_DEVICES_ENV_VAR: "1",
    }
    return get_runtime_env_info(RuntimeEnv(env_vars=env_vars), is_job_runtime_env=False)


def _ask(node: dict, env_info, num_workers: int, keep_alive_s: int, job: bytes | None) -> bool:
    """One PrestartWorkers request to NODE's raylet; False (and a log line) if it fails."""
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import common_pb2
    from ray.core.generated import node_manager_pb2 as nm
    from ray.core.generated import node_manager_pb2_grpc as nm_grpc

    req = nm.PrestartWorkersRequest(
        language=common_pb2.PYTHON, keep_alive_duration_secs=keep_alive_s, num_workers=num_workers
    )
    if job is not None:
        req.job_id = job
    req.runtime_env_info.CopyFrom(env_info)
    address = f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
    channel = init_grpc_channel(address)  # with the cluster's token where auth is on
    try:
        nm_grpc.NodeManagerServiceStub(channel).PrestartWorkers(req, timeout=5)
        return True
    except Exception as e:  # noqa: BLE001 - best effort, never the job's failure
        print(f"processes not started early on {address} ({e})", flush=True)
        return False
    finally:
        channel.close()


def _env_or_none(build):
    """BUILD's runtime env info, or None where this Ray lacks what it needs."""
    import ray

    if ray.get_runtime_context().runtime_env:
        return None  # the job's own env would be merged into its actors': not asked for
    try:
        import ray.core.generated.node_manager_pb2  # noqa: F401

        return build()
    except ImportError as e:  # another Ray: the processes start as they would have
        print(f"processes not started early ({e})", flush=True)
        return None


def _slots(cpus_per_trial: float) -> list[tuple[dict, int]]:
    """Every alive worker node, with its trial slots."""
    import ray

    return [
        (node, slots)
        for node in ray.nodes()
        if node["Alive"]
        for slots in [int(node["Resources"].get("CPU", 0) // cpus_per_trial)]
        if slots >= 1
    ]


def trial_workers(
    cpus_per_trial: float, ask: bool = True, keep_alive_s: int = KEEP_ALIVE_S
) -> tuple[int, int]:
    """Ask every alive worker node for one process per trial slot (if ASK), but for the
    slots the job before this one left processes waiting; (the number asked for, the number
    waiting). The note of those is taken either way: this job's trials take them."""
    import ray

    env_info = _env_or_none(trial_env_info)
    if env_info is None:
        return 0, 0
    job = bytes.fromhex(ray.get_runtime_context().get_job_id())
    waiting = _take_waiting(env_info.serialized_runtime_env)
    asked = found = 0
    for node, slots in _slots(cpus_per_trial):
        have = min(slots, waiting.get(node["NodeID"], 0))
        found += have
        if ask and slots > have and _ask(node, env_info, slots - have, keep_alive_s, job):
            asked += slots - have
    return asked, found


def for_next_job(cpus_per_trial: float) -> tuple[int, int]:
    """At a job's end, processes for the next job: (its supervisor's, its trials'). Not
    while another job runs: the last to end asks, so jobs run side by side leave one set
    waiting, not one each (and another job's trials would take them)."""
    if _others_running():
        return 0, 0
    return next_supervisor(), next_trial_workers(cpus_per_trial)


def _note_waiting(slots: dict[str, int], env: str, until: float) -> None:
    from ray.experimental import internal_kv

    note = {"until": until, "env": env, "slots": slots}
    try:
        internal_kv._internal_kv_put(WAITING_KEY, json.dumps(note), namespace=WAITING_NS)
    except Exception as e:  # noqa: BLE001 - best effort: the next job asks for its own
        print(f"the next job's trial processes not noted ({e})", flush=True)


def _take_waiting(env: str) -> dict[str, int]:
    """The processes the job before this one left for its trials, by node: taken (the note
    is deleted, so that a job beside this one does not count on them too), and only where
    they are still alive and of this job's runtime env."""
    return _read_waiting(env, take=True)[0]


def _read_waiting(env: str, take: bool) -> tuple[dict[str, int], float]:
    """The note of waiting processes of runtime env ENV: (their slots by node, until when);
    none where it is missing, near its end or of another env. TAKE deletes it."""
    from ray.experimental import internal_kv

    try:
        raw = internal_kv._internal_kv_get(WAITING_KEY, namespace=WAITING_NS)
        if raw is None:
            return {}, 0.0
        if take:
            internal_kv._internal_kv_del(WAITING_KEY, namespace=WAITING_NS)
        note = json.loads(raw)
    except Exception as e:  # noqa: BLE001 - best effort: this job asks for its own
        print(f"processes the last job left not read ({e})", flush=True)
        return {}, 0.0
    until = float(note.get("until", 0))
    if note.get("env") != env or until - time.time() < WAITING_MARGIN_S:
        return {}, 0.0
    return {k: int(v) for k, v in note.get("slots", {}).items()}, until


def warm(cpus_per_trial: float) -> tuple[int, int]:
    """Between jobs, once workers were added: processes for the next job's trials on every
    worker node the note does not cover (the new ones; a job leaves processes only on the
    nodes it ran beside), and for its supervisor, which this run's own took; (supervisor,
    trial processes) asked for. Not while another job runs, as at a job's end."""
    if _others_running():
        return 0, 0
    return next_supervisor(), next_trial_workers(cpus_per_trial)


def next_trial_workers(cpus_per_trial: float, keep_alive_s: int = SUPERVISOR_KEEP_ALIVE_S) -> int:
    """Processes for the next job's trials, for no job in particular: ask each alive
    worker node for the trial slots the note of waiting processes leaves short (at a job's
    end, all of them: the job's start took the note), and note them with the others
    (WAITING_KEY); the number asked for."""
    env_info = _env_or_none(trial_env_info)
    if env_info is None:
        return 0
    env = env_info.serialized_runtime_env
    have, until = _read_waiting(env, take=False)
    slots = dict(have)
    for node, n in _slots(cpus_per_trial):
        short = n - have.get(node["NodeID"], 0)
        if short > 0 and _ask(node, env_info, short, keep_alive_s, None):
            slots[node["NodeID"]] = n
    if slots == have:
        return 0
    # The earlier processes end first: the note holds until then.
    end = time.time() + keep_alive_s
    _note_waiting(slots, env, min(until, end) if have else end)
    return sum(slots.values()) - sum(have.values())


def next_supervisor(keep_alive_s: int = SUPERVISOR_KEEP_ALIVE_S) -> int:
    """Ask this job's node (the head) for one process for the next job's supervisor; the
    number asked for (0 or 1)."""
    import ray

    env_info = _env_or_none(supervisor_env_info)
    if env_info is None:
        return 0
    here = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == here and n["Alive"]), None)
    return int(node is not None and _ask(node, env_info, 1, keep_alive_s, None))


def _others_running() -> bool:
    """Whether another job's driver is alive (Ray's own connections, in its _ray_internal
    namespaces, aside: as Ray's usage_lib counts running jobs)."""
    import ray

    me = ray.get_runtime_context().get_job_id()
    try:
        gcs = ray._private.worker.global_worker.gcs_client
        infos = gcs.get_all_job_info(
            skip_submission_job_info_field=True, skip_is_running_tasks_field=True, timeout=5
        )
    except Exception as e:  # noqa: BLE001 - best effort: not asked for
        print(f"the next job's supervisor not started early ({e})", flush=True)
        return True
    return any(
        not info.is_dead
        and not info.config.ray_namespace.startswith("_ray_internal")
        and info.job_id.hex() != me
        for info in infos.values()
    )


def supervisor_started_at() -> float | None:
    """When this job's supervisor process started (the driver's ancestor that Ray titles
    ray::JobSupervisor), or None outside a submitted job."""
    import psutil
    from train import started_at

    try:
        for parent in psutil.Process().parents():
            title = parent.cmdline()
            if title and title[0].startswith("ray::JobSupervisor"):
                return started_at(parent)
    except psutil.Error:
        pass
    return None
