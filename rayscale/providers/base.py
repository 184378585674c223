"""The Provider interface: how rayscale makes and resizes a Ray cluster, whatever it runs on.

A provider knows how to make a cluster and change its size. It knows nothing of jobs or
tuning: callers reach the cluster only through ``endpoint()``, a dashboard URL plus a
token, which is what the Job Submission API needs.

Cluster shape. Every provider makes one head node that runs no trials (``num-cpus 0``)
and ``n`` worker nodes that do. "Workers" always counts worker nodes, never the head.

A provider makes machines (processes, containers, pods, VMs) and starts on each the Ray
that rayscale.runtime describes; it knows nothing of Ray's flags beyond asking runtime for
them, and nothing of jobs or studies.

Node states (a closed set, ``NODE_STATES``), as Ray's State API reports them:

    alive     -> listed ALIVE
    dead      -> listed DEAD (its process / container / pod is gone)

Contract (every provider keeps each of these; each method's docstring says more):

- ``up(workers)`` creates the cluster, records it in the state dir, and returns once the
  head and ``workers`` workers are alive and the Job API answers. It is written once, here
  (rayscale.lifecycle adds the one read a job makes, under the state dir's lock);
  providers fill in ``_plan`` / ``_create`` / ``_teardown``. Refuses with a UserError when
  the state dir records a running cluster. If it fails or is interrupted, it stops
  everything it started, keeps the logs and clears the record before it re-raises.
- ``scale(workers)`` adds or removes worker nodes until ``workers`` are alive. Idempotent:
  scaling to the current size does nothing. Which workers go on a scale-down is the
  provider's choice (local and docker: the newest; kuberay and ray-up: their autoscaler's).
- ``wait_ready(workers, timeout)`` blocks until exactly ``workers`` worker nodes are alive
  (read through Ray's State API, never ``ray status``), or raises UserError on
  timeout saying what is missing. Safe to call any number of times.
- ``endpoint()`` returns ``Endpoint(url, token)``: a dashboard / Job API URL reachable
  from this machine (loopback or a managed port-forward) and the cluster's auth token;
  ``shares_disk`` where every node reads this machine's files, ``image_job`` where the
  nodes' image holds the job (a job dir that matches is then not uploaded either).
- ``status()`` returns the nodes the cluster knows, with their state and resources.
- ``down()`` stops exactly what this provider started (by PID, container id, resource
  name), removes its temp dirs and clears the state dir. Idempotent: ``down`` on a
  cluster that is already gone only clears the record.
- ``is_running()`` tells whether the recorded cluster still exists (its head process or
  container lives; on Kubernetes, its RayCluster object).
- ``check_fits(workers)`` (optional) refuses, before anything is made, a size this
  machine cannot host; ``node_cpu_seconds()`` (optional) reports CPU time per node.

Concurrency: one command at a time changes a cluster; the CLI holds the state dir's lock
around up / scale / down. ``status``, ``endpoint`` and ``wait_ready`` only read and may
run at any time.
"""

from __future__ import annotations

import abc
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypedDict

from rayscale import console, forward, nodes, procs
from rayscale.endpoint import IMAGE_JOB, Endpoint
from rayscale.errors import UserError
from rayscale.runtime import GIB
from rayscale.state import StateDir, command

NODE_STATES = ("alive", "dead")
# How long a forward's tunnel may take to hold its port again (its supervisor restarts it).
FORWARD_SETTLE_S = 15.0


class ClusterRecord(TypedDict, total=False):
    """What the state dir's cluster.json holds for every provider; each provider's record
    (LocalRecord, DockerRecord, ...) adds what its `_teardown` and `status` need."""

    provider: str  # the registry name, e.g. "local"
    created: float  # time.time() at `up`
    dashboard_url: str  # the dashboard / Job API as this machine reaches it


class ProcRecord(TypedDict, total=False):
    """A process rayscale started (rayscale.procs.spawn): stopped by PID, never by name."""

    pid: int
    create_time: float
    log: str


@dataclass(frozen=True)
class Options:
    """The options a provider takes beyond the worker count (None = not given). A provider
    declares its own subclass; a field made with `flag()` is a `cluster up` / `scaling`
    flag, built by the CLI from this declaration; the registry refuses a flag that is not
    one of the provider's fields."""


@dataclass(frozen=True)
class Flag:
    """How the CLI offers a provider option: `--<field name, dashed>` with this help."""

    help: str
    choices: tuple[str, ...] = ()  # the values it takes, where it is one of a few
    envvar: str | None = None  # read when the flag is not given (name it in the help)
    metavar: str | None = None


def flag(help: str, **how: Any) -> Any:
    """An Options field the CLI offers as a flag (its value: None = not given)."""
    return field(default=None, metadata={"flag": Flag(help, **how)})


@dataclass
class NodeInfo:
    node_id: str
    role: str  # "head" | "worker"
    state: str  # one of NODE_STATES
    cpus: float
    memory_gib: float
    address: str = ""

    @classmethod
    def of(cls, n: nodes.RayNode, address: str) -> NodeInfo:
        """A node as the State API lists it (rayscale.nodes)."""
        return cls(
            node_id=n.node_id,
            role="head" if n.is_head else "worker",
            state="alive" if n.alive else "dead",
            cpus=n.cpus,
            memory_gib=round(n.memory_bytes / GIB, 2),
            address=address,
        )


def ray_nodes(rec: dict[str, Any], token: str | None) -> list[nodes.RayNode]:
    """The nodes the cluster's State API lists, or one UserError naming `cluster down`."""
    try:
        return nodes.nodes(rec["dashboard_url"], token)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(
            f"cannot reach the cluster's dashboard at {rec['dashboard_url']} ({type(e).__name__})",
            f"is it still running? {command('cluster down')} clears a dead cluster",
        ) from None


@dataclass
class ClusterStatus:
    provider: str
    dashboard_url: str
    nodes: list[NodeInfo] = field(default_factory=list)

    @property
    def alive_workers(self) -> int:
        return sum(1 for n in self.nodes if n.role == "worker" and n.state == "alive")

    @property
    def worker_cpus(self) -> float:
        return sum(n.cpus for n in self.nodes if n.role == "worker" and n.state == "alive")

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "dashboard_url": self.dashboard_url,
            "alive_workers": self.alive_workers,
            "worker_cpus": self.worker_cpus,
            "nodes": [asdict(n) for n in self.nodes],
        }


def status_of_named(
    provider: str, rec: dict[str, Any], token: str | None, gone: set[str] = frozenset()
) -> ClusterStatus:
    """The head and the recorded workers (rec["workers"], each with its --node-name) as the
    State API lists them; workers removed by an earlier scale-down are left out, and
    those named in `gone` are dead whatever the State API still says (local and docker)."""
    ours = {w["name"] for w in rec["workers"]}
    st = ClusterStatus(provider, rec["dashboard_url"])
    found = [n for n in ray_nodes(rec, token) if n.is_head or n.name in ours]
    for n in sorted(found, key=lambda n: (not n.is_head, n.name)):
        node = NodeInfo.of(n, n.name)
        if n.name in gone:
            node.state = "dead"
        st.nodes.append(node)
    return st


@dataclass(frozen=True)
class NodeShape:
    """Resources of one worker node. The head always gets num-cpus 0."""

    cpus_per_worker: int = 1
    memory_per_worker_gib: float = 2.0
    object_store_gib: float = 0.5

    @classmethod
    def sized(cls, cpus_per_worker: int, memory_per_worker_gib: float) -> NodeShape:
        # The object store takes a quarter of each worker's memory, at least 256 MiB.
        return cls(cpus_per_worker, memory_per_worker_gib, max(0.25, memory_per_worker_gib / 4))


class Provider(abc.ABC):
    name: ClassVar[str] = ""
    default_timeout: ClassVar[float] = 180.0  # seconds up / scale / wait_ready wait when not told
    Options: ClassVar[type[Options]] = Options
    takes_shape: ClassVar[bool] = False  # sizes its workers by --cpus/--memory-per-worker
    # Its workers all run on the machine that runs rayscale (they share its cores):
    # rayscale.predict scales measured trial costs by it.
    one_machine: ClassVar[bool] = False
    # Its nodes' image is read by a one-line job after `up` (rayscale.lifecycle): where
    # rayscale cannot exec into the head (pods, cloud VMs).
    image_probe: ClassVar[bool] = False

    def __init__(self, state: StateDir, shape: NodeShape | None = None, **options: Any):
        self.state = state
        self.shape = shape or NodeShape()
        self.options = self.Options(**options)  # TypeError on an option it does not take

    @classmethod
    def flags(cls) -> dict[str, Flag]:
        """Its options the CLI offers as flags, by field name, in declaration order."""
        return {f.name: f.metadata["flag"] for f in fields(cls.Options) if "flag" in f.metadata}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        shape = ("cpus_per_worker", "memory_per_worker") if cls.takes_shape else ()
        return (*(f.name for f in fields(cls.Options)), *shape)

    def up(self, workers: int, timeout: float | None = None) -> None:
        """Create the cluster; return once the head and `workers` workers are alive and the
        Job API answers with the cluster's token.

        Written once for every provider: claim the state dir (refuse a running cluster,
        clean one whose head died) -> `check_fits` -> `_plan` (checks and the record,
        nothing made that `_undo_plan` cannot take back) -> `_create` -> `wait_ready` -> the
        Job API. On any failure or interrupt it tears down what it made, keeps the logs,
        clears the record and re-raises. `timeout` bounds the whole wait (default: the
        provider's)."""
        self._claim_state()
        self.check_fits(workers)
        rec = self._plan(workers)
        deadline = time.monotonic() + (timeout or self._up_timeout(rec))

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        try:
            self.state.write(rec)
            self._create(rec, workers, deadline)
            self.state.write(rec)
            self.wait_ready(workers, left())
            # The Job API starts last on the head; give it at least a minute of its own.
            wait_job_api(
                rec["dashboard_url"], self.state.token(), max(60.0, left()), self._log_hint(rec)
            )
            self._on_up(rec)
        except BaseException as failed:
            try:
                self._teardown(rec)
            except UserError as e:  # the record stays: `down` can retry what is left
                say(
                    f"cleaning up after the failed up did not finish: {e.line()}; "
                    f"run {command('cluster down')} to retry"
                )
                raise failed from None
            self._undo_plan(rec)
            self.state.clear(keep_logs=True)  # the error names a log; keep it
            raise

    @abc.abstractmethod
    def _plan(self, workers: int) -> dict[str, Any]:
        """Checks that need no resources (tools, image, config), a fresh token, and the new
        cluster's record: `provider`, `created`, `dashboard_url` and what `_teardown` needs."""

    @abc.abstractmethod
    def _create(self, rec: dict[str, Any], workers: int, deadline: float) -> None:
        """Make the head and `workers` workers, recording each in `rec` as it is made (the
        caller writes `rec` and waits for the workers and the Job API)."""

    def _up_timeout(self, rec: dict[str, Any]) -> float:
        return self.default_timeout

    def _log_hint(self, rec: dict[str, Any]) -> str:
        """Where a user reads why the head did not come up."""
        return str(self.state.logs_dir)

    def _on_up(self, rec: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """The cluster is up and its Job API answers: what the provider reads from it once."""

    def _undo_plan(self, rec: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Take back what `_plan` made (e.g. a claim) after a failed `up`."""

    @abc.abstractmethod
    def _teardown(self, rec: dict[str, Any]) -> None:
        """Stop and remove everything a cluster record names. Must tolerate partial records."""

    def _claim_state(self) -> None:
        """Before `up`: refuse a running cluster, clean one that died, refuse a foreign one."""
        existing = self.state.read()
        if not existing:
            return
        if existing.get("provider") != self.name:
            raise UserError(
                f"the state dir {self.state.path} records a {existing.get('provider')} cluster",
                f"run {command('cluster down')} first, or start another beside it with --cluster NAME",
            )
        if self.is_running():
            raise UserError(
                f"a {self.name} cluster already runs from {self.state.path} "
                f"(dashboard {existing.get('dashboard_url')})",
                f"use {command('cluster scale')} to resize it or {command('cluster down')} first",
            )
        self._teardown(existing)  # its head is gone: clean what is left
        self.state.clear()

    def _record(self) -> dict[str, Any]:
        rec = self.state.read()
        if not rec or rec.get("provider") != self.name:
            raise UserError(
                f"no {self.name} cluster is recorded in {self.state.path}",
                f"start one with {command(f'cluster up --provider {self.name} --workers N')}",
            )
        return rec

    def _wait_named(self, rec: dict, workers: int, timeout: float, late, lost=lambda: None) -> None:
        """Until the dashboard lists the recorded workers alive, by name (the providers that
        name their nodes: local, docker). `lost()` raises where a worker is known gone
        already; `late(missing)` is the UserError at the timeout."""
        want = {w["name"] for w in rec["workers"]}
        if len(want) != workers:
            raise UserError(
                f"the cluster has {len(want)} workers, not {workers}",
                f"run {command(f'cluster scale --workers {workers}')}",
            )
        deadline = time.monotonic() + timeout
        while True:
            # None while the dashboard is still starting.
            alive = nodes.alive_worker_names(rec["dashboard_url"], self.state.token()) or set()
            if alive == want:
                return
            lost()
            if time.monotonic() > deadline:
                raise late(sorted(want - alive))
            time.sleep(0.1)

    @abc.abstractmethod
    def scale(self, workers: int, timeout: float | None = None) -> None:
        """Add or remove worker nodes until exactly `workers` (>= 1) are alive, then return.

        Idempotent: the current size changes no node. Which workers go on a scale-down is
        the provider's choice. Raises UserError when no cluster of this provider is
        recorded, when it is gone (naming `cluster down`), when the new size does not fit,
        or when the workers are not alive within `timeout` seconds (default: the
        provider's), saying how many are."""

    @abc.abstractmethod
    def wait_ready(self, workers: int, timeout: float | None = None) -> None:
        """Block until exactly `workers` worker nodes are alive, as the GCS or the dashboard
        lists them (never `ray status`). Only reads; safe to call at any time and any number
        of times. Raises UserError on timeout with what is still missing."""

    @abc.abstractmethod
    def endpoint(self) -> Endpoint:
        """The dashboard / Job API URL as this machine reaches it (loopback, or a managed
        port-forward it restarts if needed) and the cluster's token. Raises UserError when
        no cluster of this provider is recorded."""

    @abc.abstractmethod
    def _reach(self, rec: dict[str, Any]) -> str:
        """The cluster's token, once the recorded dashboard address is known to be the
        cluster's own listener (its head, its container's published port, its forward's
        tunnel): never sent to whatever process took the port after the cluster stopped.
        Raises UserError otherwise. `endpoint` and `status` send the token through it."""

    @abc.abstractmethod
    def status(self) -> ClusterStatus:
        """The cluster's nodes: one head, its workers, each `alive` or `dead` (NODE_STATES),
        with CPUs and memory. Workers the provider removed are left out. Raises UserError
        when the cluster cannot be reached."""

    def down(self, delete_results: bool = False, forget: bool = False) -> None:
        """Stop and remove everything `up` and `scale` made (by PID, container id or resource
        name, never by a name pattern), remove temp dirs, clear the record and the token.
        Idempotent: with no record it does nothing; on a cluster that is already gone it
        only clears the record. A step that fails raises UserError naming what may still
        run, and keeps the record and the logs, so `down` can be run again.

        The results (Tune's output and checkpoints) stay and are named on stderr, unless
        `delete_results`. `forget` clears the record without reaching the cluster."""
        rec = self.state.read()
        if not rec or rec.get("provider") != self.name:
            self.state.clear()
            return
        if not forget:
            try:
                self._teardown(rec)
                note = self._delete_results(rec) if delete_results else self.kept_results(rec)
            except UserError as e:
                raise UserError(
                    f"cluster down did not finish: {e.problem}",
                    f"{e.fix + '; then ' if e.fix else ''}run {command('cluster down')} again "
                    f"(the record and logs in {self.state.path} are kept)",
                ) from None
            if note:
                say(note)
        self.state.clear()

    def kept_results(self, rec: dict[str, Any]) -> str | None:
        """Where the results are once the cluster is down, for the user; None if nowhere
        the kit made."""
        return None

    def _delete_results(self, rec: dict[str, Any]) -> str:
        """`down --delete-results`: delete the results storage the kit made; say what went."""
        return (
            f"the {self.name} provider keeps no results storage of its own: the results are "
            "where the job's --storage-path put them; nothing deleted"
        )

    @abc.abstractmethod
    def is_running(self) -> bool:
        """Whether the recorded cluster still exists (its head process or container lives;
        on Kubernetes, its RayCluster object). False with no record. Never raises for a
        cluster that is gone: `up` uses it to tell a live record from a stale one."""

    def dry_run(self, workers: int) -> list[tuple[str, str]]:
        """What `up` with `workers` workers would create, as (title, text) sections: the
        commands, manifests or launcher YAML, with the shape and resources. It creates
        nothing, writes nothing and asks nothing of the cluster or its platform."""
        raise UserError(f"--dry-run is not available for the {self.name} provider")

    def check_fits(self, workers: int, running: int = 0) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Raise UserError when `workers` workers of this shape cannot run here."""

    def node_cpu_seconds(self) -> dict[str, dict[int, float]]:
        """CPU seconds used so far by each node's processes ({node: {pid: seconds}}).

        For the scaling study's utilisation samples. Providers that cannot see their
        nodes' processes return {} and the study records no utilisation.
        """
        return {}


class ForwardedProvider(Provider):
    image_probe = True
    """A provider whose dashboard is reached through a managed forward (ray-up, kuberay).

    The tunnel command runs under rayscale.forward (which restarts it when it drops),
    listens on 127.0.0.1:rec["forward_port"], and is recorded as rec["forward"].
    """

    @abc.abstractmethod
    def _forward_argv(self, rec: dict[str, Any]) -> list[str] | None:
        """The tunnel command; None where the dashboard is reached without one."""

    def _open_forward(self, rec: dict[str, Any]) -> None:
        log = self.state.logs_dir / "forward.log"
        try:
            rec["forward"] = forward.start(
                self._forward_argv(rec), rec["forward_port"], log, timeout=60
            )
        except TimeoutError as e:
            raise UserError(
                f"the forward to the dashboard did not open: {e}", f"read {log}"
            ) from None
        if not self.state.update(rec, "forward"):  # `down` cleared the record meanwhile
            procs.stop(rec["forward"], grace=5)
            raise UserError(
                f"the cluster's record in {self.state.path} was cleared while its forward opened",
                f"{command('cluster list')} shows what is recorded",
            )

    def _ensure_forward(self, rec: dict[str, Any]) -> None:
        """Restart the forward's supervisor if it is gone (the supervisor restarts the tunnel)."""
        if self._forward_argv(rec) is not None and not procs.alive(
            rec.get("forward") or {"pid": -1}
        ):
            self._open_forward(rec)

    def _stop_forward(self, rec: dict[str, Any]) -> None:
        if rec.get("forward"):
            procs.stop(rec["forward"], grace=5)

    def _reach(self, rec: dict[str, Any]) -> str:
        self._ensure_forward(rec)
        if self._forward_argv(rec) is not None and not forward.wait(
            rec["forward"], FORWARD_SETTLE_S
        ):
            port = rec["forward_port"]
            raise UserError(
                f"the forward's tunnel does not hold 127.0.0.1:{port} (another user's "
                "process may hold the port), so the cluster's token is not sent there",
                f"free the port (`ss -ltnp 'sport = :{port}'` names its process) and run the "
                f"command again; read {self.state.logs_dir / 'forward.log'}",
            )
        return self.state.token()

    def endpoint(self) -> Endpoint:
        rec = self._record()
        digest = rec.get("image_job_digest")
        return Endpoint(
            rec["dashboard_url"],
            self._reach(rec),
            image_job=(IMAGE_JOB, digest) if digest else None,
        )


def say(line: str) -> None:
    """A note to the user on stderr (providers print nothing else)."""
    console.say(line, err=True)


def wait_job_api(url: str, token: str | None, timeout: float, where: str) -> None:
    """Block until the Job API answers with this token (the last step of every `up`)."""
    import contextlib
    import urllib.request

    def ready() -> bool:
        req = urllib.request.Request(
            url + "/api/version", headers={"Authorization": f"Bearer {token}"}
        )
        with contextlib.suppress(OSError), urllib.request.urlopen(req, timeout=1) as r:
            return r.status == 200
        return False

    if not procs.wait_for(ready, timeout, interval=0.1):
        raise UserError(
            f"the Job API at {url} did not answer within {timeout:.0f} s", f"read {where}"
        )


def status_from_dashboard(
    provider: str, url: str, token: str | None, fix: str, label: dict[str, str] | None = None
) -> ClusterStatus:
    """The nodes of a cluster reached through a forwarded dashboard (ray-up, kuberay).

    Workers the autoscaler removed are left out; `label` names nodes by address (pod names).
    """
    try:
        found = nodes.nodes(url, token)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot reach the cluster's dashboard at {url} ({e})", fix) from None
    st = ClusterStatus(provider, url)
    for n in sorted(found, key=lambda n: (not n.is_head, n.address)):
        if not n.alive and not n.is_head:
            continue
        st.nodes.append(NodeInfo.of(n, (label or {}).get(n.address, n.address)))
    return st


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
