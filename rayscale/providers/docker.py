"""The docker provider: the head and each worker are containers of the kit's image.

All containers of a cluster share a user-defined network (workers reach the head by its
name), a volume mounted as every node's Tune storage path (trial checkpoints must be on
storage all nodes share), and a label naming the cluster, so `down` removes exactly
them. The volume is the state dir's, not the cluster's: `down` keeps it (unless
--delete-results) and the next `up` there mounts it again, so `job resume` finds its runs. Each container runs `ray start` with rayscale.runtime's arguments, the same Ray
every provider starts, named for its container (the State API finds nodes by it). Only
the dashboard / Job API is published, on 127.0.0.1.

We drive the `docker` CLI rather than the Docker Engine API client: it is what users
already have configured (contexts, Docker Desktop, rootless, remote hosts), it adds no
dependency to the launcher, and every call here is a handful of short commands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit

from rayscale import __version__, procs, runtime
from rayscale.endpoint import IMAGE_JOB, IMAGE_JOB_DIGEST, Endpoint
from rayscale.errors import UserError
from rayscale.providers.base import (
    ClusterRecord,
    ClusterStatus,
    NodeShape,
    Options,
    Provider,
    flag,
    plural,
    status_of_named,
)
from rayscale.runtime import GIB
from rayscale.state import CONFIG_DIR, command

DEFAULT_IMAGE = f"rayscale:{__version__}"
# Ray's memory and object store on the head, its daemons (the dashboard's module
# processes among them) and the job's driver.
HEAD_CONTAINER_GIB = 3.0
RESULTS = "/home/ray/rayscale_results"


def docker_binary() -> str:
    found = procs.tool("docker")
    if not found:
        raise UserError(
            "the `docker` command is not installed",
            "install Docker (Debian: apt-get install docker.io), or use --provider local",
        )
    return found


def engine_info() -> dict[str, Any]:
    """`docker info` as a dict (MemTotal bytes, NCPU, ...); {} where the engine cannot say
    (then `docker run` / `kind create` judge, and say what is wrong)."""
    try:
        out = subprocess.run(
            [docker_binary(), "info", "--format", "{{json .}}"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return json.loads(out or "{}")
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return {}


def engine_memory_gib() -> float:
    """The memory the Docker engine can give containers, in GiB; 0 where it cannot say."""
    return engine_info().get("MemTotal", 0) / GIB


@dataclasses.dataclass(frozen=True)
class DockerOptions(Options):
    image: str | None = flag("the kit's image [default rayscale:<version>]")


class ContainerRecord(TypedDict, total=False):
    name: str  # also the container's hostname
    id: str
    index: int  # workers: w<index>, never reused


class DockerRecord(ClusterRecord, total=False):
    cluster_id: str  # every container and the network carry it as a label
    image: str
    network: str
    volume: str  # the Tune storage path every node mounts; outlives the cluster
    made_volume: bool  # this `up` created the volume
    shape: dict[str, float]  # NodeShape as a dict
    head: ContainerRecord
    workers: list[ContainerRecord]  # oldest first; scale-down removes from the end
    next_worker: int
    image_job_digest: str | None  # the digest of the image's job/, if it has one


class DockerProvider(Provider):
    one_machine = True
    name = "docker"
    Options = DockerOptions
    takes_shape = True

    @property
    def image(self) -> str:
        return self.options.image or DEFAULT_IMAGE

    def _docker(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        try:
            p = subprocess.run(
                [docker_binary(), *args], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise UserError(
                f"`docker {args[0]}` did not answer in {timeout:.0f} s",
                "is the Docker engine healthy? (`docker info`)",
            ) from None
        if check and p.returncode != 0:
            err = (p.stderr.strip().splitlines() or ["no output"])[-1]
            if "Cannot connect to the Docker daemon" in err or "connect: no such file" in err:
                raise UserError(
                    "no Docker engine answers",
                    "start it (`dockerd`, or Docker Desktop) or use --provider local",
                )
            raise UserError(f"`docker {' '.join(args[:2])}` failed: {err}")
        return p.stdout.strip()

    # ---- up / down --------------------------------------------------------------------

    def check_fits(self, workers: int, running: int = 0) -> None:
        have = engine_memory_gib()
        need = HEAD_CONTAINER_GIB + workers * self.shape.memory_per_worker_gib
        if have and need > have:
            raise UserError(
                f"{workers} workers of {self.shape.memory_per_worker_gib:g} GiB need {need:.1f} GiB "
                f"but the Docker engine has {have:.1f} GiB",
                "use fewer --workers, a smaller --memory-per-worker, or give Docker more memory",
            )

    def is_running(self) -> bool:
        rec = self.state.read()
        if not rec or rec.get("provider") != self.name:
            return False
        state = self._docker(
            "inspect", "-f", "{{.State.Running}}", rec["head"]["name"], check=False
        )
        return state == "true"

    def _plan(self, workers: int) -> DockerRecord:
        self._docker("version", "--format", "{{.Server.Version}}", timeout=30)
        if not self._docker("images", "-q", self.image):
            raise UserError(
                f"image {self.image} is not on this Docker engine",
                "build it with `make image` (or pass --image)",
            )
        cid = secrets.token_hex(4)
        self.state.new_token()
        (self.state.config_dir / "token.env").unlink(missing_ok=True)
        return {
            "provider": self.name,
            "created": time.time(),
            "cluster_id": cid,
            "image": self.image,
            "network": f"rayscale-{cid}",
            "volume": self.results_volume(),
            "shape": dataclasses.asdict(self.shape),
            "workers": [],
            "next_worker": 0,
            "head": {"name": f"rayscale-{cid}-head"},
        }

    def _create(self, rec: DockerRecord, workers: int, deadline: float) -> None:
        self._docker(
            "network", "create", "--label", f"rayscale.cluster={rec['cluster_id']}", rec["network"]
        )
        # One volume per state dir and cluster name, kept by `down`: a cluster brought up
        # again there finds its runs (`job resume`).
        if not self._docker("volume", "ls", "-q", "--filter", f"name=^{rec['volume']}$"):
            self._docker(
                "volume", "create", "--label", f"rayscale.results={self.state.path}", rec["volume"]
            )
            rec["made_volume"] = True
        self._start_head(rec)
        self._add_workers(rec, workers)

    def _log_hint(self, rec: DockerRecord) -> str:
        return f"`docker logs {rec['head']['name']}`"

    def dry_run(self, workers: int) -> list[tuple[str, str]]:
        rec: DockerRecord = {
            "cluster_id": "$ID",
            "network": "rayscale-$ID",
            "volume": self.results_volume(),
            "shape": dataclasses.asdict(self.shape),
            "head": {"name": "rayscale-$ID-head"},
        }
        docker = docker_binary()
        lines = [
            [docker, "network", "create", "--label", "rayscale.cluster=$ID", rec["network"]],
            [docker, "volume", "create", "--label", f"rayscale.results={self.state.path}",
             rec["volume"]],
            [docker, *self._head_args(rec)],
            *([docker, *self._worker_args(rec, i)] for i in range(workers)),
        ]  # fmt: skip
        return [
            (
                f"Docker objects: a network, the results volume (made if missing, kept by "
                f"down), a head container (1 CPU, {HEAD_CONTAINER_GIB:g} GiB) and "
                f"{plural(workers, 'worker')} of {self.shape.cpus_per_worker} CPU and "
                f"{self.shape.memory_per_worker_gib + self.shape.object_store_gib:g} GiB, "
                f"image {self.image} ($ID: drawn at up)",
                "\n".join(runtime.shell_join(a) for a in lines),
            )
        ]

    def _run_args(self, rec: DockerRecord, name: str, cpus: float, memory_gib: float) -> list[str]:
        shm = max(0.25, memory_gib / 3)  # Ray's object store lives in /dev/shm
        return [
            "run",
            "-d",
            "--init",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            rec["network"],
            "--label",
            f"rayscale.cluster={rec['cluster_id']}",
            f"--cpus={cpus:g}",
            f"--memory={int(memory_gib * GIB)}",
            f"--shm-size={int(shm * GIB)}",
            "--security-opt",
            "no-new-privileges",
            "--cap-drop",
            "ALL",
            "-v",
            f"{rec['volume']}:{RESULTS}",
            *[f for k, v in runtime.node_env().items() for f in ("-e", f"{k}={v}")],
            # The token by file, not argv: any local user can read /proc/*/cmdline.
            "--env-file",
            str(self._token_env_path()),
        ]

    def _token_env_path(self) -> Path:
        return self.state.path / CONFIG_DIR / "token.env"  # made by _token_env, not here

    def _token_env(self) -> None:
        path = self.state.config_dir / "token.env"  # config_dir: made if missing
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"RAY_AUTH_TOKEN={self.state.token()}\n")

    def _head_args(self, rec: DockerRecord) -> list[str]:
        name = rec["head"]["name"]
        return self._run_args(rec, name, 1, HEAD_CONTAINER_GIB) + [
            # Published on loopback only; the host port is chosen by Docker.
            "-p",
            f"127.0.0.1::{runtime.DASHBOARD_PORT}",
            self.image,
            "ray",
            # 0.0.0.0 inside the container: Docker publishes it on the host's loopback only.
            *runtime.start_args(runtime.head(dashboard_host="0.0.0.0", node_name=name)),
        ]

    def _worker_args(self, rec: DockerRecord, idx: int) -> list[str]:
        shape, name = rec["shape"], f"rayscale-{rec['cluster_id']}-w{idx}"
        return [
            *self._run_args(
                rec,
                name,
                shape["cpus_per_worker"],
                shape["memory_per_worker_gib"] + shape["object_store_gib"],
            ),
            self.image,
            "ray",
            *runtime.start_args(
                runtime.worker(
                    f"{rec['head']['name']}:{runtime.GCS_PORT}",
                    cpus=shape["cpus_per_worker"],
                    memory_bytes=int(shape["memory_per_worker_gib"] * GIB),
                    object_store_bytes=int(shape["object_store_gib"] * GIB),
                    node_name=name,
                )
            ),
        ]

    def _start_head(self, rec: DockerRecord) -> None:
        name = rec["head"]["name"]
        self._token_env()
        rec["head"]["id"] = self._docker(*self._head_args(rec))
        rec["dashboard_url"] = f"http://{self._published(name, runtime.DASHBOARD_PORT)}"
        # A job dir that matches the image's copy runs from there, not uploaded; an image
        # built without the digest file gets every job uploaded, as before.
        digest = self._docker("exec", name, "cat", IMAGE_JOB_DIGEST, check=False)
        rec["image_job_digest"] = digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None

    def _published(self, name: str, port: int) -> str:
        out = self._docker("port", name, f"{port}/tcp").splitlines()
        loop = [line for line in out if line.startswith("127.0.0.1:")]
        if not loop:
            raise UserError(f"container {name} does not publish {port} on 127.0.0.1")
        return loop[0]

    def _add_workers(self, rec: DockerRecord, count: int) -> None:
        self._token_env()
        for _ in range(count):
            idx = rec["next_worker"]
            rec["next_worker"] += 1
            cid = self._docker(*self._worker_args(rec, idx))
            name = f"rayscale-{rec['cluster_id']}-w{idx}"
            rec["workers"].append({"index": idx, "name": name, "id": cid})

    def results_volume(self) -> str:
        digest = hashlib.sha256(str(self.state.path).encode()).hexdigest()[:8]
        return f"rayscale-{self.state.name}-{digest}-results"

    def _teardown(self, rec: DockerRecord) -> None:
        cid = rec.get("cluster_id")
        if not cid:
            return
        label = f"label=rayscale.cluster={cid}"
        ids = self._docker("ps", "-aq", "--filter", label).split()
        if ids:
            # SIGTERM lets each `ray start` drain its node; whatever remains after 10 s is killed.
            self._docker("stop", "-t", "10", *ids, check=False, timeout=60)
            self._docker("rm", "-f", *ids, check=False, timeout=60)
        if rec.get("network"):
            self._docker("network", "rm", rec["network"], check=False)
        left = [
            *self._docker("ps", "-aq", "--filter", label).split(),
            *self._docker("network", "ls", "-q", "--filter", label).split(),
        ]
        if left:
            raise UserError(
                f"containers or networks of cluster {cid} are still there: {' '.join(left)}",
                f"see `docker ps -a --filter {label}` and `docker network ls --filter {label}`",
            )

    def _undo_plan(self, rec: DockerRecord) -> None:
        if rec.get("made_volume"):  # this failed `up` made it: empty, nothing lost with it
            self._docker("volume", "rm", rec["volume"], check=False)

    def kept_results(self, rec: DockerRecord) -> str | None:
        return (
            f"results kept in Docker volume {rec['volume']} (`cluster down --delete-results` "
            f"deletes it; `docker volume rm {rec['volume']}` once the cluster is down)"
            if rec.get("volume")
            else None
        )

    def _delete_results(self, rec: DockerRecord) -> str:
        if not rec.get("volume"):
            return "no results volume recorded; nothing deleted"
        self._docker("volume", "rm", "-f", rec["volume"])
        return f"results deleted: Docker volume {rec['volume']}"

    def scale(self, workers: int, timeout: float | None = None) -> None:
        timeout = timeout or self.default_timeout
        rec = self._record()
        if not self.is_running():
            raise UserError(
                "the cluster's head container is not running",
                f"run {command('cluster down')} then {command('cluster up')} again",
            )
        running = set(
            self._docker(
                "ps", "-q", "--no-trunc", "--filter", f"label=rayscale.cluster={rec['cluster_id']}"
            ).split()
        )
        gone = [w for w in rec["workers"] if w["id"] not in running]
        if gone:
            self._docker("rm", "-f", *(w["id"] for w in gone), check=False)
        rec["workers"] = [w for w in rec["workers"] if w["id"] in running]
        have = len(rec["workers"])
        if workers > have:
            self.shape = NodeShape(**rec["shape"])  # as made: `scale` takes no shape
            self.check_fits(workers)
            self._add_workers(rec, workers - have)
        elif workers < have:
            leaving = rec["workers"][workers:]
            rec["workers"] = rec["workers"][:workers]
            ids = [w["id"] for w in leaving]
            self._docker("stop", "-t", "10", *ids, timeout=60)
            self._docker("rm", "-f", *ids, check=False)
        self.state.write(rec)
        self.wait_ready(workers, timeout)

    # ---- readiness / endpoint / status ------------------------------------------------

    def wait_ready(self, workers: int, timeout: float | None = None) -> None:
        timeout = timeout or self.default_timeout
        rec = self._record()
        self._wait_named(rec, workers, timeout, lambda missing: UserError(
            f"workers {', '.join(missing)} not alive after {timeout:.0f} s",
            f"read `docker logs {missing[0] if missing else rec['head']['name']}`",
        ))  # fmt: skip

    def _reach(self, rec: DockerRecord) -> str:
        where = urlsplit(rec["dashboard_url"]).netloc
        head = rec["head"].get("id") or rec["head"]["name"]
        try:
            published = self._docker("port", head, f"{runtime.DASHBOARD_PORT}/tcp")
        except UserError as e:
            if e.problem == "no Docker engine answers":
                raise
            published = ""  # no such container
        if where not in published.splitlines():
            raise UserError(
                f"the head container {rec['head']['name']} no longer publishes the dashboard "
                f"on {where} (it stopped; another process may hold the port now), so its "
                "token is not sent there",
                f"run {command('cluster down')} then {command('cluster up')}",
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

    def status(self) -> ClusterStatus:
        rec = self._record()
        return status_of_named(self.name, rec, self._reach(rec))
