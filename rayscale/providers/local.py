"""The local provider: a real multi-node Ray cluster made of processes on this machine.

Each node is one ``ray start --block`` process (rayscale.runtime's arguments, the same Ray
every provider starts), leader of its own session, with its own temp dir, its own agent /
metrics / node-manager ports, and explicit CPU, memory and object-store sizes (otherwise
every raylet would claim the whole host). The head runs no trials (num-cpus 0); the
dashboard and Job API listen on 127.0.0.1 only; token auth is on. Nodes are named
(``head``, ``w<N>``) and found by name in Ray's State API.
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
from urllib.parse import urlsplit

import psutil

from rayscale import extras, interrupts, nodes, procs, runtime
from rayscale.endpoint import Endpoint
from rayscale.errors import UserError
from rayscale.providers.base import (
    ClusterRecord,
    ClusterStatus,
    NodeShape,
    ProcRecord,
    Provider,
    plural,
    status_of_named,
)
from rayscale.runtime import GIB, HEAD_MEMORY_GIB, HEAD_OBJECT_STORE_GIB
from rayscale.state import command

# The logs of a node's own processes that say why it did not come up.
NODE_LOGS = ("raylet.", "dashboard_agent", "runtime_env_agent")

# What each node's own processes hold beyond its declared sizes, as PSS (shared pages
# split, so nodes add up): the head's GCS, dashboard and agents about 0.75 GiB idle, a
# worker's raylet and agents about 0.3 GiB (make scale, 1 to 16 workers), with margin.
HEAD_OVERHEAD_GIB = 1.0
NODE_OVERHEAD_GIB = 0.4


def ray_executable() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise UserError("the `ray` command is not installed", "run `make install` first")
    return found


def node_env(token_file: Path) -> dict[str, str]:
    """This machine's environment, with runtime's node environment and the token file."""
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):  # the file is the one source of the token
        env.pop(k, None)
    # Jobs run `python ...` on the nodes: it must be the kit's Python, not the first on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(runtime.node_env(token_path=str(token_file)))
    return env


class NodeRecord(TypedDict, total=False):
    proc: ProcRecord  # the node's `ray start --block` process
    name: str  # its --node-name: how the State API names it
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


class LocalProvider(Provider):
    one_machine = True
    name = "local"
    takes_shape = True

    # ---- record -----------------------------------------------------------------------

    def is_running(self) -> bool:
        rec = self.state.read()
        return bool(rec and rec.get("provider") == self.name and procs.alive(rec["head"]["proc"]))

    # ---- up / down --------------------------------------------------------------------

    def check_fits(self, workers: int, running: int = 0) -> None:
        """RUNNING workers already hold their share of what is available: a scale counts
        only the ones it adds."""
        per_worker = (
            self.shape.memory_per_worker_gib + self.shape.object_store_gib + NODE_OVERHEAD_GIB
        )
        head = HEAD_MEMORY_GIB + HEAD_OBJECT_STORE_GIB + HEAD_OVERHEAD_GIB
        added = workers - running
        need = (0.0 if running else head) + added * per_worker
        have = psutil.virtual_memory().available / GIB
        if need > have:
            raise UserError(
                f"{added} {'more ' if running else ''}workers of "
                f"{self.shape.memory_per_worker_gib:g} GiB need about "
                f"{need:.1f} GiB but this machine has {have:.1f} GiB available (each worker: "
                f"its memory, a {self.shape.object_store_gib:g} GiB object store and "
                f"{NODE_OVERHEAD_GIB:g} GiB for the node's own processes"
                + ("" if running else f"; the head {head:g} GiB")
                + ")",
                "use fewer --workers or a smaller --memory-per-worker",
            )

    def _plan(self, workers: int) -> LocalRecord:
        extras.need_job("the local provider (its nodes run the job on this machine's Python)")
        token_file = self.state.new_token()
        return {
            "provider": self.name,
            "created": time.time(),
            "temp_root": tempfile.mkdtemp(prefix="rayscale-"),
            "token_file": str(token_file),
            "shape": dataclasses.asdict(self.shape),
            "workers": [],
            "next_worker": 0,
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

    def _log(self, node: str) -> Path:
        """`ray start` output of a node: in the state dir, so it outlives a failed `up`."""
        return self.state.logs_dir / f"{node}.log"

    def _spawn(self, rec: LocalRecord, spec: runtime.NodeSpec) -> ProcRecord:
        """One node: `ray start` with runtime's arguments, ports of its own on this machine."""
        spec = _on_this_machine(spec, rec["temp_root"], procs.free_ports(5))
        argv = [ray_executable(), *runtime.start_args(spec)]
        env = node_env(Path(rec["token_file"]))
        return procs.spawn(argv, env, self._log(spec.node_name))

    def _start_head(self, rec: LocalRecord) -> None:
        gcs_port, dash_port, client_port = procs.free_ports(3)
        spec = _head(gcs_port, dash_port, client_port)
        with interrupts.deferred():  # a node started is a node recorded, for the teardown
            rec["head"] = {"proc": self._spawn(rec, spec), "name": "head"}
        rec["gcs_address"] = f"127.0.0.1:{gcs_port}"
        rec["dashboard_url"] = f"http://127.0.0.1:{dash_port}"

    def dry_run(self, workers: int) -> list[tuple[str, str]]:
        free = "$FREE_PORT"
        env = runtime.node_env(token_path=str(self.state.token_file))
        shape = dataclasses.asdict(self.shape)
        nodes = [_head(free, free, free)]
        nodes += [_worker(f"127.0.0.1:{free}", shape, i) for i in range(workers)]
        lines = [
            runtime.shell_command(_on_this_machine(n, "$TEMP_DIR", [free] * 5), env) for n in nodes
        ]
        return [
            (
                f"processes on this machine: a head (no trials) and {plural(workers, 'worker')} of "
                f"{self.shape.cpus_per_worker} CPU, {self.shape.memory_per_worker_gib:g} GiB "
                f"memory and {self.shape.object_store_gib:g} GiB object store "
                "($FREE_PORT: each a port picked at up; $TEMP_DIR: a temp dir made at up)",
                "\n".join(lines),
            )
        ]

    def _wait_head(self, rec: LocalRecord) -> None:
        proc = rec["head"]["proc"]
        port = int(rec["gcs_address"].rsplit(":", 1)[1])
        if not procs.wait_for(
            lambda: procs.port_open("127.0.0.1", port) or not procs.alive(proc), 60
        ) or not procs.alive(proc):
            raise UserError(
                f"the Ray head did not start{_said(proc['log'])} (log: {proc['log']})",
                "read the log's last lines; a port in use or too little memory are usual causes",
            )

    def _add_workers(self, rec: LocalRecord, count: int) -> None:
        """Start `count` workers, at most a wave at a time: each node's `ray start` spends
        a few CPU-seconds importing Ray, and on a few cores many at once outlast Ray's fixed
        30 s start-up window ("The current node timed out during startup"). A wave is
        waited for (alive in the State API) before the next; the last is left to the
        caller's wait_ready."""
        while count > start_wave():
            first = len(rec["workers"])
            self._spawn_workers(rec, start_wave())
            self.state.write(rec)
            self._wait_alive(rec, {w["name"] for w in rec["workers"][first:]})
            count -= start_wave()
        self._spawn_workers(rec, count)

    def _wait_alive(self, rec: LocalRecord, names: set[str]) -> None:
        deadline = time.monotonic() + self.default_timeout
        while not names <= (
            nodes.alive_worker_names(rec["dashboard_url"], self.state.token()) or set()
        ):
            dead = _dead(rec)
            if dead or time.monotonic() > deadline:
                self.wait_ready(len(rec["workers"]), 1.0)  # names the dead or missing worker
            time.sleep(0.2)

    def _spawn_workers(self, rec: LocalRecord, count: int) -> None:
        for _ in range(count):
            idx = rec["next_worker"]
            rec["next_worker"] += 1
            spec = _worker(rec["gcs_address"], rec["shape"], idx)
            with interrupts.deferred():  # a node started is a node recorded, for the teardown
                rec["workers"].append(
                    {
                        "index": idx,
                        "proc": self._spawn(rec, spec),
                        "name": f"w{idx}",
                        "temp_dir": str(Path(rec["temp_root"]) / f"w{idx}"),
                    }
                )

    def scale(self, workers: int, timeout: float | None = None) -> None:
        timeout = timeout or self.default_timeout
        rec = self._record()
        if not procs.alive(rec["head"]["proc"]):
            raise UserError(
                "the cluster's head process is gone",
                f"run {command('cluster down')} then {command('cluster up')} again",
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
            # The size it was made with, not this command's defaults: `scale` takes no shape.
            self.shape = NodeShape(**rec["shape"])
            self.check_fits(workers, running=have)
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

    def wait_ready(self, workers: int, timeout: float | None = None) -> None:
        timeout = timeout or self.default_timeout
        rec = self._record()

        def lost() -> None:
            dead = _dead(rec)
            if dead:
                w = dead[0]
                kept = self._keep_ray_logs(Path(w["temp_dir"]), f"w{w['index']}")
                raise UserError(
                    f"worker w{w['index']} exited while starting{_said(w['proc']['log'])} "
                    f"(logs: {w['proc']['log']}, "
                    f"and its raylet's and agents' in {kept})",
                    "read the logs' last lines; too little memory or a port in use are the usual "
                    "causes",
                )

        def late(missing: list[str]) -> UserError:
            return UserError(
                f"{workers - len(missing)} of {workers} workers alive after {timeout:.0f} s "
                f"(missing {', '.join(missing)})",
                "check the worker logs under the cluster temp dir, or raise --timeout",
            )

        self._wait_named(rec, workers, timeout, late, lost)

    def _keep_ray_logs(self, temp_dir: Path, node: str) -> Path:
        """Copy a node's raylet and agent logs beside its `ray start` log: its temp dir goes
        with the failed `up`, and they hold why it died (`ray start` only says it timed out)."""
        dest = self.state.logs_dir / f"{node}-ray"
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(temp_dir.glob("session_*/logs/*")):
            if f.is_file() and f.name.startswith(NODE_LOGS):
                shutil.copy2(f, dest / f.name)
        return dest

    # ---- endpoint / status ------------------------------------------------------------

    def _reach(self, rec: LocalRecord) -> str:
        port = urlsplit(rec["dashboard_url"]).port
        if not (
            procs.alive(rec["head"]["proc"]) and procs.listens([rec["head"]["proc"]["pid"]], port)
        ):
            raise UserError(
                f"the cluster's head no longer holds its dashboard port {port} (it stopped; "
                "another process may hold the port now), so its token is not sent there",
                f"run {command('cluster down')} then {command('cluster up')}",
            )
        return self.state.token()

    def endpoint(self) -> Endpoint:
        rec = self._record()
        return Endpoint(rec["dashboard_url"], self._reach(rec), shares_disk=True)

    def status(self) -> ClusterStatus:
        rec = self._record()
        token = self._reach(rec)
        # A worker whose processes are gone is dead now; the State API says so only after
        # the GCS's health checks time out (seconds later).
        gone = {w["name"] for w in _dead(rec)}
        return status_of_named(self.name, rec, token, gone)

    def node_cpu_seconds(self) -> dict[str, dict[int, float]]:
        rec = self._record()
        made = {"head": rec["head"]["proc"], **{w["name"]: w["proc"] for w in rec["workers"]}}
        return {name: procs.cpu_seconds(proc["pid"]) for name, proc in made.items()}

    def head_pids(self) -> list[int]:
        return [self._record()["head"]["proc"]["pid"]]


def start_wave() -> int:
    """Worker nodes started at once. Each node starts four Python processes; with 8 more
    starting beside 8 running on 2 cores, a raylet gave up waiting for its dashboard
    agent's port file (make scale's logs); 4 at a time came up every time."""
    return 2 * (os.cpu_count() or 1)


def _dead(rec: LocalRecord) -> list:
    """The recorded workers whose processes are gone."""
    return [w for w in rec["workers"] if not procs.alive(w["proc"])]


def _said(log: str) -> str:
    """`: <the log's last line>`, or nothing where the log is empty."""
    line = procs.last_line(log)
    return f": {line}" if line else ""


def _head(gcs_port, dash_port, client_port) -> runtime.NodeSpec:
    return runtime.head(
        port=gcs_port,
        dashboard_port=dash_port,
        node_name="head",
        ports={"ray-client-server-port": client_port},
    )


def _worker(gcs_address: str, shape: dict, idx: int) -> runtime.NodeSpec:
    return runtime.worker(
        gcs_address,
        cpus=shape["cpus_per_worker"],
        memory_bytes=int(shape["memory_per_worker_gib"] * GIB),
        object_store_bytes=int(shape["object_store_gib"] * GIB),
        node_name=f"w{idx}",
    )


def _on_this_machine(spec: runtime.NodeSpec, temp_root: str, ports: list) -> runtime.NodeSpec:
    """A node beside others on one host: a temp dir and agent, metrics and node-manager
    ports of its own; its workers' ports the kernel's."""
    agent_http, agent_grpc, runtime_env, metrics, node_manager = ports
    return dataclasses.replace(
        spec,
        temp_dir=str(Path(temp_root) / spec.node_name),
        ports={
            "dashboard-agent-listen-port": agent_http,
            "dashboard-agent-grpc-port": agent_grpc,
            "runtime-env-agent-port": runtime_env,
            "metrics-export-port": metrics,
            "node-manager-port": node_manager,
            "min-worker-port": 0,
            "max-worker-port": 0,
            **spec.ports,
        },
    )
