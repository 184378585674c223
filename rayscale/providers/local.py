"""The local provider: a real multi-node Ray cluster made of processes on this machine.

Each node is one ``ray start --block`` process, leader of its own session, with its own
temp dir, its own agent / metrics / node-manager ports, and explicit CPU, memory and
object-store sizes (otherwise every raylet would claim the whole host). The head runs no
trials (num-cpus 0); the dashboard and Job API listen on 127.0.0.1 only; token auth is on.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypedDict

import psutil

from rayscale import extras, gcs, procs
from rayscale.errors import UserError
from rayscale.headnode import LEAN_MODULES, LOOPBACK_ENV
from rayscale.providers.base import (
    GIB,
    HEAD_MEMORY_GIB,
    HEAD_OBJECT_STORE_GIB,
    NODE_FLAGS,
    WORKER_ENV,
    ClusterRecord,
    ClusterStatus,
    Endpoint,
    NodeInfo,
    Options,
    ProcRecord,
    Provider,
    gcs_nodes,
    head_start,
)

# The logs of a node's own processes that say why it did not come up.
NODE_LOGS = ("raylet.", "dashboard_agent", "runtime_env_agent")

# What the head keeps to itself, beyond its declared sizes: GCS, dashboard, agents.
HEAD_OVERHEAD_GIB = 1.2


def ray_executable() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise UserError("the `ray` command is not installed", "run `make install` first")
    return found


def node_env(token_file: Path, lean: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    # Jobs run `python ...` on the nodes: it must be the kit's Python, not the first on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    env.pop("RAY_AUTH_TOKEN", None)  # the file is the one source of the token
    if lean:
        # No Prometheus metrics export: on a small machine every node's agent and raylet
        # would take CPU from the trials for numbers nobody scrapes. --dashboard full keeps it.
        env["RAY_enable_metrics_collection"] = "0"
    return env


@dataclasses.dataclass(frozen=True)
class LocalOptions(Options):
    # jobs: the head runs only the Job API's dashboard modules; full: the whole UI.
    dashboard: str = "jobs"


class NodeRecord(TypedDict, total=False):
    proc: ProcRecord  # the node's `ray start --block` process
    node_manager_port: int  # how the GCS names the node
    index: int  # workers: w<index>, never reused
    temp_dir: str  # workers: removed when the worker goes


class LocalRecord(ClusterRecord, total=False):
    temp_root: str  # every node's --temp-dir is under it
    token_file: str
    shape: dict[str, float]  # NodeShape as a dict
    head: NodeRecord
    workers: list[NodeRecord]  # oldest first; scale-down removes from the end
    next_worker: int
    gcs_address: str
    dashboard: str  # LocalOptions.dashboard


class LocalProvider(Provider):
    one_machine = True
    name = "local"
    Options = LocalOptions
    takes_shape = True

    # ---- record -----------------------------------------------------------------------

    def is_running(self) -> bool:
        rec = self.state.read()
        return bool(rec and rec.get("provider") == self.name and procs.alive(rec["head"]["proc"]))

    # ---- up / down --------------------------------------------------------------------

    def check_fits(self, workers: int) -> None:
        need = (
            HEAD_MEMORY_GIB
            + HEAD_OBJECT_STORE_GIB
            + HEAD_OVERHEAD_GIB
            + workers * (self.shape.memory_per_worker_gib + self.shape.object_store_gib)
        )
        have = psutil.virtual_memory().available / GIB
        if need > have:
            raise UserError(
                f"{workers} workers of {self.shape.memory_per_worker_gib:g} GiB need about "
                f"{need:.1f} GiB but this machine has {have:.1f} GiB available",
                "use fewer --workers or a smaller --memory-per-worker",
            )

    def _plan(self, workers: int) -> LocalRecord:
        extras.need_job("the local provider (its nodes run the job on this machine's Python)")
        token_file = self.state.new_token()
        gcs.preload()
        return {
            "provider": self.name,
            "created": time.time(),
            "temp_root": tempfile.mkdtemp(prefix="rayscale-"),
            "token_file": str(token_file),
            "shape": dataclasses.asdict(self.shape),
            "workers": [],
            "next_worker": 0,
            "dashboard": self.options.dashboard,
        }

    def _create(self, rec: LocalRecord, workers: int, deadline: float) -> None:
        self._start_head(rec)
        self.state.write(rec)
        # Workers start once the GCS listens, while the head still starts its raylet and
        # dashboard: their imports overlap that. Started before it (as they were), one in a
        # few dozen CI runs never registered: its node's first GCS call waited out Ray's
        # fixed 30 s start-up window ("The current node timed out during startup").
        self._wait_head(rec)
        self._add_workers(rec, workers)
        self.state.write(rec)

    def _log_hint(self, rec: LocalRecord) -> str:
        return rec["head"]["proc"]["log"] if rec.get("head") else super()._log_hint(rec)

    def _teardown(self, rec: LocalRecord) -> None:
        nodes = [w["proc"] for w in rec.get("workers", [])]
        if rec.get("head"):
            nodes.append(rec["head"]["proc"])
        # Workers first, in parallel; the head last so workers can deregister cleanly.
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as ex:
            list(ex.map(procs.stop, nodes[:-1] if rec.get("head") else nodes))
        if rec.get("head"):
            procs.stop(rec["head"]["proc"])
        if rec.get("temp_root"):
            shutil.rmtree(rec["temp_root"], ignore_errors=True)

    # ---- nodes ------------------------------------------------------------------------

    def _env(self, rec: LocalRecord) -> dict[str, str]:
        # One machine: every Ray port on loopback (rayscale.headnode says how).
        return {**node_env(Path(rec["token_file"]), _lean(rec)), **LOOPBACK_ENV}

    def _log(self, node: str) -> Path:
        """`ray start` output of a node: in the state dir, so it outlives a failed `up`."""
        return self.state.path / "logs" / f"{node}.log"

    def _common_args(self, temp_dir: Path) -> list[str]:
        agent_http, agent_grpc, runtime_env, metrics, node_manager = procs.free_ports(5)
        return [
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={metrics}",
            f"--node-manager-port={node_manager}",
            "--min-worker-port=0",
            "--max-worker-port=0",
        ]

    def _start_head(self, rec: LocalRecord) -> None:
        base = Path(rec["temp_root"])
        gcs_port, dash_port, client_port = procs.free_ports(3)
        args = self._common_args(base / "head")
        # The head runs through rayscale.headnode so its dashboard can be made lean.
        argv = [
            sys.executable,
            "-m",
            "rayscale.headnode",
            *head_start(gcs_port, "127.0.0.1", dash_port),
            f"--ray-client-server-port={client_port}",  # not started on a lean head
            *args,
        ]
        env = self._env(rec)
        if _lean(rec):
            env["RAYSCALE_DASHBOARD_MODULES"] = LEAN_MODULES
        proc = procs.spawn(argv, env, self._log("head"))
        rec["head"] = {"proc": proc, "node_manager_port": _port_of(args, "--node-manager-port")}
        rec["gcs_address"] = f"127.0.0.1:{gcs_port}"
        rec["dashboard_url"] = f"http://127.0.0.1:{dash_port}"

    def _wait_head(self, rec: LocalRecord) -> None:
        proc = rec["head"]["proc"]
        port = int(rec["gcs_address"].rsplit(":", 1)[1])
        if not procs.wait_for(
            lambda: procs.port_open("127.0.0.1", port) or not procs.alive(proc), 60
        ) or not procs.alive(proc):
            raise UserError(
                f"the Ray head did not start (log: {proc['log']})",
                "read the log's last lines; a port in use or too little memory are usual causes",
            )

    def _add_workers(self, rec: LocalRecord, count: int) -> None:
        shape = rec["shape"]
        base = Path(rec["temp_root"])
        for _ in range(count):
            idx = rec["next_worker"]
            rec["next_worker"] += 1
            args = self._common_args(base / f"w{idx}")
            argv = [
                sys.executable,
                "-m",
                "rayscale.headnode",
                "start",
                f"--address={rec['gcs_address']}",
                f"--num-cpus={shape['cpus_per_worker']}",
                f"--memory={int(shape['memory_per_worker_gib'] * GIB)}",
                f"--object-store-memory={int(shape['object_store_gib'] * GIB)}",
                *NODE_FLAGS,
                *args,
            ]
            proc = procs.spawn(argv, {**self._env(rec), **WORKER_ENV}, self._log(f"w{idx}"))
            rec["workers"].append(
                {
                    "index": idx,
                    "proc": proc,
                    "node_manager_port": _port_of(args, "--node-manager-port"),
                    "temp_dir": str(base / f"w{idx}"),
                }
            )

    def scale(self, workers: int, timeout: float | None = None) -> None:
        timeout = timeout or self.default_timeout
        rec = self._record()
        if not procs.alive(rec["head"]["proc"]):
            raise UserError(
                "the cluster's head process is gone",
                "run `rayscale cluster down` then `rayscale cluster up` again",
            )
        # Workers that died on their own no longer count.
        dead = _dead(rec)
        for w in dead:
            procs.stop(w["proc"])
            shutil.rmtree(w["temp_dir"], ignore_errors=True)
        rec["workers"] = [w for w in rec["workers"] if w not in dead]
        if dead:  # recorded now: wait_ready reads the record, also when no node is added
            self.state.write(rec)
        have = len(rec["workers"])
        if workers > have:
            self.check_fits(workers)
            self._add_workers(rec, workers - have)
            self.state.write(rec)
        elif workers < have:
            leaving = rec["workers"][workers:]
            rec["workers"] = rec["workers"][:workers]
            with ThreadPoolExecutor(max_workers=len(leaving)) as ex:
                list(ex.map(lambda w: procs.stop(w["proc"]), leaving))
            for w in leaving:
                shutil.rmtree(w["temp_dir"], ignore_errors=True)
            self.state.write(rec)
        self.wait_ready(workers, timeout)

    # ---- readiness --------------------------------------------------------------------

    def _alive_worker_ports(self, rec: LocalRecord) -> set[int]:
        try:
            found = gcs.nodes(rec["gcs_address"], self.state.token())
        except Exception:  # the GCS may still be starting
            return set()
        return {n.node_manager_port for n in found if n.alive and not n.is_head}

    def wait_ready(self, workers: int, timeout: float | None = None) -> None:
        timeout = timeout or self.default_timeout
        rec = self._record()
        want = {w["node_manager_port"] for w in rec["workers"]}
        if len(want) != workers:
            raise UserError(
                f"the cluster has {len(want)} workers, not {workers}",
                f"run `rayscale cluster scale --workers {workers}`",
            )
        deadline = time.monotonic() + timeout
        while True:
            alive_ports = self._alive_worker_ports(rec)
            if alive_ports == want:
                return
            dead = _dead(rec)
            if dead:
                w = dead[0]
                kept = self._keep_ray_logs(Path(w["temp_dir"]), f"w{w['index']}")
                raise UserError(
                    f"worker w{w['index']} exited while starting (logs: {w['proc']['log']}, "
                    f"and its raylet's and agents' in {kept})",
                    "read the logs' last lines; too little memory or a port in use are the usual "
                    "causes",
                )
            if time.monotonic() > deadline:
                missing = sorted(want - alive_ports)
                raise UserError(
                    f"{len(alive_ports & want)} of {workers} workers alive after {timeout:.0f} s "
                    f"(missing node-manager ports {missing})",
                    "check the worker logs under the cluster temp dir, or raise --timeout",
                )
            time.sleep(0.1)

    def _keep_ray_logs(self, temp_dir: Path, node: str) -> Path:
        """Copy a node's raylet and agent logs beside its `ray start` log: its temp dir goes
        with the failed `up`, and they hold why it died (`ray start` only says it timed out)."""
        dest = self.state.path / "logs" / f"{node}-ray"
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(temp_dir.glob("session_*/logs/*")):
            if f.is_file() and f.name.startswith(NODE_LOGS):
                shutil.copy2(f, dest / f.name)
        return dest

    # ---- endpoint / status ------------------------------------------------------------

    def endpoint(self) -> Endpoint:
        rec = self._record()
        return Endpoint(rec["dashboard_url"], self.state.token(), shares_disk=True)

    def status(self) -> ClusterStatus:
        rec = self._record()
        ports = {w["node_manager_port"]: f"w{w['index']}" for w in rec["workers"]}
        # A worker whose processes are gone is dead now; the GCS says so only after its
        # health checks time out (seconds later).
        gone = {w["node_manager_port"] for w in _dead(rec)}
        st = ClusterStatus(self.name, rec["dashboard_url"])
        for n in sorted(
            gcs_nodes(rec, self.state.token()), key=lambda n: (not n.is_head, n.node_manager_port)
        ):
            if not n.alive and n.node_manager_port not in ports and not n.is_head:
                continue  # a worker removed earlier by scale; not part of this cluster now
            node = NodeInfo.of(n, f"{n.address}:{n.node_manager_port}")
            if n.node_manager_port in gone:
                node.state = "dead"
            st.nodes.append(node)
        return st

    def node_cpu_seconds(self) -> dict[str, dict[int, float]]:
        rec = self._record()
        nodes = {
            "head": rec["head"]["proc"],
            **{f"w{w['index']}": w["proc"] for w in rec["workers"]},
        }
        return {name: procs.cpu_seconds(proc["pid"]) for name, proc in nodes.items()}

    def head_pids(self) -> list[int]:
        return [self._record()["head"]["proc"]["pid"]]


def _dead(rec: LocalRecord) -> list:
    """The recorded workers whose processes are gone."""
    return [w for w in rec["workers"] if not procs.alive(w["proc"])]


def _port_of(args: list[str], flag: str) -> int:
    return int(next(a.split("=", 1)[1] for a in args if a.startswith(flag + "=")))


def _lean(rec: LocalRecord) -> bool:
    """`--dashboard jobs` (the default): the lean head and no metrics export."""
    return rec.get("dashboard", "jobs") == "jobs"
