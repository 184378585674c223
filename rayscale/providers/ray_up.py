"""The ray-up provider: a cluster made by Ray's cluster launcher from one of cluster/*.yaml.

rayscale renders the user's YAML into the state dir (the same file every later `ray`
command is given, so `ray up`, `ray dashboard` and `ray down` agree on the cluster name),
with three changes:

- the worker node type's ``min_workers`` and ``max_workers`` both set to the requested
  count: the autoscaler launches up to the floor and terminates nodes over the ceiling
  ("max_workers_per_type"), so the cluster holds exactly N workers while the study runs;
- the auth token mount points at the state dir's token, made fresh for this cluster;
- for the fake multi-node provider, the GCS address of the local head.

Scaling writes the rendered YAML again and pushes it with ``ray up -y --no-restart``: the
head's monitor re-reads its config and launches or removes workers. We do not use
``ray.autoscaler.sdk.request_resources``: its request is a floor that persists until it is
replaced, so it would keep workers alive after a scale-down.

The dashboard and Job API stay on the head's loopback; rayscale reaches them through
``ray dashboard`` (an SSH tunnel) run under a managed forward (rayscale.forward), which
restarts it when it drops.

The fake multi-node provider cannot be launched with ``ray up`` in Ray 2.60, so for
``provider.type: fake_multinode`` the head is started here with ``ray start --head
--autoscaling-config`` and RAY_FAKE_CLUSTER=1; everything after that (scale, wait,
status, jobs) runs the same code as a cloud cluster.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from rayscale import extras, interrupts, nodes, procs, runtime
from rayscale.errors import UserError
from rayscale.providers.base import (
    ClusterRecord,
    ClusterStatus,
    ForwardedProvider,
    Options,
    ProcRecord,
    flag,
    plural,
    status_from_dashboard,
)
from rayscale.providers.launcher_config import (
    HOST_CHECK,
    check_logins,
    failed_setup,
    load_config,
    on_hosts,
    on_prem,
    pin_workers,
    render,
    set_hosts,
)
from rayscale.providers.local import node_env, ray_executable
from rayscale.state import CONFIG_DIR, command

CLOUD_TIMEOUT = 900.0  # VMs take minutes to boot and run their setup
FAKE_TIMEOUT = 180.0


def ray_cli() -> str:
    """The `ray` command to launch with: $RAYSCALE_RAY (e.g. a venv with boto3), else the kit's."""
    return os.environ.get("RAYSCALE_RAY") or ray_executable()


# ---- launchers: how the head is made and the config pushed -----------------------------


class CloudLauncher:
    """`ray up` / `ray down` / `ray dashboard`, on the rendered YAML."""

    kind = "ray-up"
    timeout = CLOUD_TIMEOUT

    @staticmethod
    def _env(config: str) -> list[str]:
        """Ray's autoscaler v2, `ray up`'s default since Ray 2.50, has no on-prem (`local`)
        provider (ray-project/ray#57153): its monitor would never start a worker host. Ray's
        documented switch keeps those on v1."""
        return CloudLauncher.env_for(yaml.safe_load(Path(config).read_text()) or {})

    @staticmethod
    def env_for(cfg: dict[str, Any]) -> list[str]:
        return ["env", "RAY_UP_enable_autoscaler_v2=0"] if on_prem(cfg) else []

    @staticmethod
    def up_argv(config: str) -> list[str]:
        return [*CloudLauncher._env(config), ray_cli(), "up", "-y", "--no-config-cache", config]

    @staticmethod
    def apply_argv(config: str) -> list[str]:
        # --no-restart: push the new min/max workers to the running head's monitor.
        return [*CloudLauncher._env(config), ray_cli(), "up", "-y", "--no-restart",
                "--no-config-cache", config]  # fmt: skip

    @staticmethod
    def down_argv(config: str) -> list[str]:
        return [ray_cli(), "down", "-y", config]

    @staticmethod
    def forward_argv(config: str, port: int) -> list[str]:
        return [
            ray_cli(),
            "dashboard",
            "--port",
            str(port),
            "--remote-port",
            str(runtime.DASHBOARD_PORT),
            "--no-config-cache",
            config,
        ]

    def __init__(self, provider: RayUpProvider):
        self.p = provider

    def prepare(self, rec: RayUpRecord, cfg: dict[str, Any]) -> None:
        pass

    def start(self, rec: RayUpRecord) -> None:
        log = self.p.state.logs_dir / "ray-up.log"
        # The log is appended to by every `ray up` of this state dir: read this one's part.
        since = log.stat().st_size if log.exists() else 0
        try:
            self.p._ray(self.up_argv(rec["config"]), "ray-up")
        except UserError as e:
            text = log.read_bytes()[since:].decode(errors="replace")
            said = [ln.strip() for ln in text.splitlines()
                    if f"{HOST_CHECK}: host" in ln and "echo" not in ln]  # fmt: skip
            if said:
                raise UserError(
                    said[-1].split(f"{HOST_CHECK}: ", 1)[1],
                    f"install Ray {version('ray')} on that host's login PATH "
                    f"(pip install --require-hashes -r job/requirements.txt); read {log}",
                ) from None
            cfg = yaml.safe_load(Path(rec["config"]).read_text())
            failed = failed_setup(text, cfg)
            if failed:
                head = cfg.get("provider", {}).get("head_ip") or "the head"
                raise UserError(
                    f"setup command `{failed[0]}` failed on {head}: " + " | ".join(failed[1]),
                    f"fix setup_commands in {rec.get('source_config', 'the config')}; "
                    f"the whole output: {log}",
                ) from None
            raise e from None
        self.p._open_forward(rec)

    def apply(self, rec: RayUpRecord) -> None:
        self.p._ray(self.apply_argv(rec["config"]), "ray-up")

    def stop(self, rec: RayUpRecord) -> None:
        if not Path(rec.get("config", "")).is_file():
            return
        try:
            self.p._ray(self.down_argv(rec["config"]), "ray-down")
        except UserError as e:  # the VMs may still run, and bill
            raise UserError(
                f"{e.problem}; the cluster {rec.get('cluster_name')}'s machines may still run",
                f"{e.fix}, fix the cause (credentials, network), or stop them yourself with "
                f"`ray down -y {rec['config']}`",
            ) from None
        cfg = yaml.safe_load(Path(rec["config"]).read_text())
        if on_prem(cfg):
            # `ray down` stops Ray on the head only; Ray's on-prem provider "terminates" a
            # worker host by forgetting it, and its raylet lives on until it gives the GCS up.
            # A host without Ray runs none (an up refused by the host check).
            stop = "bash --login -c 'command -v ray >/dev/null || exit 0; ray stop --force'"
            failed, login = on_hosts(cfg, stop)
            if failed:
                raise UserError(
                    f"Ray may still run on {len(failed)} host(s), where `ray stop` could not "
                    "run (" + "; ".join(failed) + ")",
                    f"bring them back, or run `ray stop` on them yourself (as {login})",
                )

    def head_alive(self, rec: RayUpRecord) -> bool:
        return True  # only the dashboard, through the tunnel, can tell


class FakeLauncher:
    """Ray's fake multi-node provider: the head here, worker nodes launched by its autoscaler."""

    kind = "fake"
    timeout = FAKE_TIMEOUT

    def __init__(self, provider: RayUpProvider):
        self.p = provider

    def prepare(self, rec: RayUpRecord, cfg: dict[str, Any]) -> None:
        extras.need_job("Ray's fake multi-node cluster (its nodes run the job on this machine)")
        gcs_port, dash, client, metrics = procs.free_ports(4)
        rec.update(
            gcs_port=gcs_port,
            dashboard_url=f"http://127.0.0.1:{dash}",
            ports={"dashboard": dash, "client": client, "metrics": metrics},
            temp_root=tempfile.mkdtemp(prefix="rayscale-"),
        )
        cfg["provider"]["gcs_address"] = f"127.0.0.1:{gcs_port}"

    @staticmethod
    def head(rec: RayUpRecord) -> runtime.NodeSpec:
        ports = rec["ports"]
        return runtime.head(
            port=rec["gcs_port"],
            dashboard_port=ports["dashboard"],
            temp_dir=rec["temp_root"],
            ports={
                "ray-client-server-port": ports["client"],
                "metrics-export-port": ports["metrics"],
            },
            extra=(f"--autoscaling-config={rec['config']}",),
        )

    def start(self, rec: RayUpRecord) -> None:
        env = {**node_env(self.p.state.token_file), **runtime.FAKE_CLUSTER_ENV}
        with interrupts.deferred():  # a head started is a head recorded, for the teardown
            rec["head"] = procs.spawn(
                [ray_executable(), *runtime.start_args(self.head(rec))],
                env,
                self.p.state.logs_dir / "head.log",
            )

    def apply(self, rec: RayUpRecord) -> None:
        pass  # the monitor re-reads its config file on every update (~5 s)

    def stop(self, rec: RayUpRecord) -> None:
        if rec.get("head"):
            procs.stop(rec["head"])  # its session holds the worker nodes the autoscaler made
        if rec.get("temp_root"):
            shutil.rmtree(rec["temp_root"], ignore_errors=True)

    def head_alive(self, rec: RayUpRecord) -> bool:
        return bool(rec.get("head")) and procs.alive(rec["head"])


# ---- the provider ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RayUpOptions(Options):
    config: str | None = flag("the cluster launcher YAML, e.g. cluster/aws.yaml (required)")
    hosts: str | None = flag(
        "on hosts (cluster/onprem.yaml): the head's address, then the workers' "
        "[$RAYSCALE_HOSTS; default: the config's head_ip and worker_ips]",
        envvar="RAYSCALE_HOSTS",
        metavar="HEAD,WORKER,...",
    )
    ssh_user: str | None = flag(
        "on hosts: the SSH user [$RAYSCALE_SSH_USER; default: the config's]",
        envvar="RAYSCALE_SSH_USER",
    )
    ssh_key: str | None = flag(
        "on hosts: the SSH private key the launcher logs in with "
        "[$RAYSCALE_SSH_KEY; default: the config's auth.ssh_private_key]",
        envvar="RAYSCALE_SSH_KEY",
    )


class RayUpRecord(ClusterRecord, total=False):
    source_config: str  # the user's YAML
    config: str  # the rendered YAML every `ray` command is given
    cluster_name: str
    launcher: str  # "cloud" (ray up / ray down) or "fake" (Ray's fake multi-node)
    forward_port: int
    forward: ProcRecord  # the managed `ray dashboard` tunnel (cloud)
    # fake only: the head process and its ports, under temp_root
    head: ProcRecord
    gcs_port: int
    ports: dict[str, int]
    temp_root: str


class RayUpProvider(ForwardedProvider):
    name = "ray-up"
    Options = RayUpOptions

    @property
    def one_machine(self) -> bool:  # type: ignore[override]
        rec = self.state.read() or {}
        return rec.get("launcher") == FakeLauncher.kind

    def _launcher(self, rec: RayUpRecord) -> CloudLauncher | FakeLauncher:
        return (FakeLauncher if rec.get("launcher") == FakeLauncher.kind else CloudLauncher)(self)

    def _ray(self, argv: list[str], what: str, check: bool = True) -> None:
        """Run a `ray` launcher command, its output to the state dir's logs."""
        procs.run_logged(argv, self.state.logs_dir / f"{what}.log", CLOUD_TIMEOUT, check)

    def _write_config(self, rec: RayUpRecord, cfg: dict[str, Any]) -> None:
        Path(rec["config"]).write_text(yaml.safe_dump(cfg, sort_keys=False))

    def _forward_argv(self, rec: RayUpRecord) -> list[str] | None:
        if rec.get("launcher") != CloudLauncher.kind:
            return None  # the fake cluster's dashboard is on this machine's loopback already
        return CloudLauncher.forward_argv(rec["config"], rec["forward_port"])

    # ---- up / scale / down ----------------------------------------------------------------

    def _plan(self, workers: int) -> RayUpRecord:
        source = self.options.config
        cfg = load_config(source)
        set_hosts(cfg, self.options)
        if on_prem(cfg):
            check_logins(cfg)
        launcher_cls = (
            FakeLauncher if cfg["provider"].get("type") == "fake_multinode" else CloudLauncher
        )
        self._rendered = self._render(cfg, workers, self.state.new_token())
        port = procs.free_ports(1)[0]
        return {
            "provider": self.name,
            "created": time.time(),
            "source_config": str(Path(source).resolve()),
            "cluster_name": self._rendered.get("cluster_name", "default"),
            "launcher": launcher_cls.kind,
            "config": str(self.state.config_dir / "cluster.yaml"),
            "forward_port": port,
            "dashboard_url": f"http://127.0.0.1:{port}",
        }

    def _render(self, cfg: dict[str, Any], workers: int, token_file: Path) -> dict[str, Any]:
        rendered = render(cfg, workers, token_file)
        if not self.state.is_default:
            # The launcher finds a cluster's machines by cluster_name: one YAML, two clusters.
            name = rendered.get("cluster_name", "default")
            rendered["cluster_name"] = f"{name}-{self.state.name}"
        return rendered

    def dry_run(self, workers: int) -> list[tuple[str, str]]:
        cfg = load_config(self.options.config)
        set_hosts(cfg, self.options)
        rendered = self._render(cfg, workers, self.state.token_file)
        config = str(self.state.path / CONFIG_DIR / "cluster.yaml")
        fake = rendered["provider"].get("type") == "fake_multinode"
        if fake:
            rendered["provider"]["gcs_address"] = "127.0.0.1:$FREE_PORT"
        text = yaml.safe_dump(rendered, sort_keys=False)
        sections = [(f"the cluster launcher YAML, written to {config}", text)]
        if fake:
            free = "$FREE_PORT"
            rec: RayUpRecord = {
                "gcs_port": free,
                "ports": {"dashboard": free, "client": free, "metrics": free},
                "temp_root": "$TEMP_DIR",
                "config": config,
            }  # type: ignore[typeddict-item]
            env = {**runtime.node_env(token_path=str(self.state.token_file))}
            env.update(runtime.FAKE_CLUSTER_ENV)
            return sections + [
                (
                    "its head, on this machine; Ray's autoscaler then starts "
                    f"{plural(workers, 'worker')} as local processes ($FREE_PORT: each a port "
                    "picked at up; $TEMP_DIR: a temp dir made at up)",
                    runtime.shell_command(FakeLauncher.head(rec), env),
                )
            ]
        argv = [*CloudLauncher.env_for(rendered), ray_cli(), "up", "-y", "--no-config-cache"]
        return sections + [
            (
                f"the launcher's command: a head and {plural(workers, 'worker')} "
                "(min_workers = max_workers)",
                runtime.shell_join([*argv, config]),
            )
        ]

    def _up_timeout(self, rec: RayUpRecord) -> float:
        return self._launcher(rec).timeout

    def _create(self, rec: RayUpRecord, workers: int, deadline: float) -> None:
        launcher = self._launcher(rec)
        launcher.prepare(rec, self._rendered)
        self._write_config(rec, self._rendered)
        self.state.write(rec)
        launcher.start(rec)

    def scale(self, workers: int, timeout: float | None = None) -> None:
        rec = self._record()
        launcher = self._launcher(rec)
        if not self.is_running():
            raise UserError(
                "the cluster's head does not answer",
                f"run {command('cluster down')} then {command('cluster up')} again",
            )
        cfg = yaml.safe_load(Path(rec["config"]).read_text())
        pin_workers(cfg, workers)
        self._write_config(rec, cfg)
        launcher.apply(rec)
        self.wait_ready(workers, timeout or launcher.timeout)

    def _teardown(self, rec: RayUpRecord) -> None:
        self._stop_forward(rec)
        self._launcher(rec).stop(rec)
        self.state.remove_own(CONFIG_DIR)

    def is_running(self) -> bool:
        rec = self.state.read()
        if not rec or rec.get("provider") != self.name or not self._launcher(rec).head_alive(rec):
            return False
        self._ensure_forward(rec)
        return procs.wait_for(
            lambda: nodes.alive_workers(rec["dashboard_url"], self.state.token()) is not None,
            15,
            interval=0.5,
        )

    # ---- readiness / endpoint / status ----------------------------------------------------

    def wait_ready(self, workers: int, timeout: float | None = None) -> None:
        rec = self._record()
        launcher = self._launcher(rec)
        timeout = timeout or launcher.timeout
        deadline = time.monotonic() + timeout
        alive: int | None = None
        while True:
            alive = nodes.alive_workers(rec["dashboard_url"], self.state.token())
            if alive == workers:
                return
            if not launcher.head_alive(rec):
                raise UserError(
                    "the Ray head exited while the cluster was starting",
                    f"read {self.state.path / 'logs'}",
                )
            if time.monotonic() > deadline:
                seen = "the dashboard did not answer" if alive is None else f"{alive} alive"
                raise UserError(
                    f"{workers} workers wanted, {seen} after {timeout:.0f} s",
                    "read `ray monitor` / the autoscaler log on the head, or raise --timeout",
                )
            time.sleep(0.5)

    def status(self) -> ClusterStatus:
        rec = self._record()
        return status_from_dashboard(
            self.name,
            rec["dashboard_url"],
            self._reach(rec),
            f"is it still running? {command('cluster down')} clears a dead cluster",
        )
