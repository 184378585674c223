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

import copy
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from rayscale import extras, nodes, procs, runtime
from rayscale.errors import UserError, read_yaml
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
from rayscale.providers.local import node_env, ray_executable
from rayscale.state import CONFIG_DIR, command

TOKEN_SOURCE = "~/.ray/auth_token"
CLOUD_TIMEOUT = 900.0  # VMs take minutes to boot and run their setup
FAKE_TIMEOUT = 180.0


def ray_cli() -> str:
    """The `ray` command to launch with: $RAYSCALE_RAY (e.g. a venv with boto3), else the kit's."""
    return os.environ.get("RAYSCALE_RAY") or ray_executable()


# ---- the rendered config ---------------------------------------------------------------


def load_config(path: str | os.PathLike | None) -> dict[str, Any]:
    if not path:
        raise UserError(
            "the ray-up provider needs a cluster config",
            "pass --config cluster/aws.yaml (or gcp.yaml, onprem.yaml, local-autoscale.yaml)",
        )
    p = Path(path).expanduser()
    cfg = read_yaml(p, f"cluster config {p}", "pass an existing file with --config",
                    "fix the file; cluster/aws.yaml is a working example")  # fmt: skip
    if not isinstance(cfg, dict) or "provider" not in cfg:
        raise UserError(
            f"cluster config {p} has no provider section",
            "start from one of the kit's cluster/*.yaml",
        )
    return cfg


def on_prem(cfg: dict[str, Any]) -> bool:
    """Ray's `local` provider: fixed hosts over SSH (cluster/onprem.yaml)."""
    return (cfg.get("provider") or {}).get("type") == "local"


def worker_type(cfg: dict[str, Any]) -> str | None:
    """The one worker node type rayscale scales (None on on-prem hosts: Ray makes it)."""
    if on_prem(cfg):
        return None
    types = cfg.get("available_node_types") or {}
    head = cfg.get("head_node_type")
    workers = [t for t in types if t != head]
    if len(workers) != 1:
        raise UserError(
            f"the cluster config needs exactly one worker node type, found {len(workers)} "
            f"({', '.join(workers) or 'none'})",
            "keep one worker type in available_node_types besides the head's",
        )
    return workers[0]


def pin_workers(cfg: dict[str, Any], workers: int) -> None:
    """Set the config's worker floor and ceiling both to `workers`, in place."""
    wt = worker_type(cfg)
    if wt is None:
        # On-prem: Ray moves the top-level min / max into the node type it generates.
        hosts = len(cfg["provider"].get("worker_ips") or [])
        if workers > hosts:
            raise UserError(
                f"{workers} workers wanted but the config lists {hosts} worker_ips",
                f"use --workers {hosts} or fewer, or add hosts to provider.worker_ips",
            )
        cfg["min_workers"] = cfg["max_workers"] = workers
        return
    node = cfg["available_node_types"][wt]
    node["min_workers"] = node["max_workers"] = workers
    cfg["max_workers"] = max(int(cfg.get("max_workers", 0)), workers)


def set_hosts(cfg: dict[str, Any], options: RayUpOptions) -> None:
    """The machines and the SSH login from --hosts / --ssh-user / --ssh-key, in place: the
    shipped onprem.yaml runs unchanged on a user's own machines."""
    given = {f"--{k.replace('_', '-')}": v for k, v in
             (("hosts", options.hosts), ("ssh_user", options.ssh_user), ("ssh_key", options.ssh_key)) if v}  # fmt: skip
    if not given:
        return
    if not on_prem(cfg):
        raise UserError(
            f"{', '.join(given)} name on-prem hosts, but this config's provider is "
            f"{cfg['provider'].get('type')}",
            "drop them, or use a config with `provider: type: local` (cluster/onprem.yaml)",
        )
    if options.hosts:
        hosts = [h.strip() for h in options.hosts.split(",") if h.strip()]
        if len(hosts) < 2:
            raise UserError(
                f"--hosts {options.hosts!r} names {len(hosts)} machine(s)",
                "give the head's address, then at least one worker's: --hosts HEAD,WORKER,...",
            )
        cfg["provider"]["head_ip"], cfg["provider"]["worker_ips"] = hosts[0], hosts[1:]
    auth = cfg.setdefault("auth", {})
    if options.ssh_user:
        auth["ssh_user"] = options.ssh_user
    if options.ssh_key:
        key = Path(options.ssh_key).expanduser()
        if not key.is_file():
            raise UserError(f"--ssh-key {key}: no such file", "pass the private key's path")
        auth["ssh_private_key"] = str(key.resolve())


def render(cfg: dict[str, Any], workers: int, token_file: Path) -> dict[str, Any]:
    """The config rayscale launches: exactly `workers` workers, this cluster's token."""
    out = copy.deepcopy(cfg)
    pin_workers(out, workers)
    if out["provider"].get("type") == "fake_multinode":
        return out  # local processes read the token from the environment
    mounts = out.get("file_mounts") or {}
    targets = [
        dst
        for dst, src in mounts.items()
        if os.path.expanduser(str(src)) == os.path.expanduser(TOKEN_SOURCE)
    ]
    if not targets:
        raise UserError(
            f"the cluster config does not mount the auth token ({TOKEN_SOURCE}) onto its nodes",
            f"add `file_mounts: {{{runtime.LAUNCHER_TOKEN_PATH}: {TOKEN_SOURCE}}}` as "
            "cluster/aws.yaml does",
        )
    for dst in targets:
        mounts[dst] = str(token_file)
    out["file_mounts"] = mounts
    if on_prem(out):  # hosts bring their own Ray: check it first
        out["setup_commands"] = [host_check(), *(out.get("setup_commands") or [])]
    return out


HOST_CHECK = "rayscale-host-check"
SSH_CHECK_S = (
    15  # per host, all at once: an unreachable host fails here, not after ray up's minutes
)


def on_hosts(cfg: dict[str, Any], command: str) -> tuple[list[str], str]:
    """Run `command` on every on-prem host at once, logged in as the launcher is (its key,
    its user, no prompt); ([one "host: why" per host where it failed], "user with key")."""
    from concurrent.futures import ThreadPoolExecutor

    ssh = procs.tool("ssh")
    if not ssh:
        raise UserError(
            "the `ssh` command is not installed (Ray's launcher logs in to the hosts with it)",
            "install the OpenSSH client (Debian: apt-get install openssh-client)",
        )
    auth = cfg.get("auth") or {}
    user, key = auth.get("ssh_user"), os.path.expanduser(str(auth.get("ssh_private_key", "")))
    hosts = [cfg["provider"]["head_ip"], *cfg["provider"].get("worker_ips", [])]
    argv = [ssh, "-i", key, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CHECK_S}",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR"]  # fmt: skip

    def run(host: str) -> str | None:
        try:
            p = subprocess.run([*argv, f"{user}@{host}", command], capture_output=True,
                               text=True, timeout=SSH_CHECK_S + 30)  # fmt: skip
        except subprocess.TimeoutExpired:
            return f"{host}: no answer in {SSH_CHECK_S + 30} s"
        if p.returncode == 0:
            return None
        last = (p.stderr.strip().splitlines() or [f"exited {p.returncode}"])[-1]
        return f"{host}: {last}"

    with ThreadPoolExecutor(len(hosts)) as pool:
        return [f for f in pool.map(run, hosts) if f], f"{user} with {key}"


def check_logins(cfg: dict[str, Any]) -> None:
    """Log in to every on-prem host before `ray up`: a wrong key or an unreachable host is
    one line naming it, not minutes of Ray's SSH retries."""
    failed, login = on_hosts(cfg, "true")
    if failed:
        hosts = 1 + len(cfg["provider"].get("worker_ips", []))
        raise UserError(
            f"cannot log in as {login} to {len(failed)} of {hosts} hosts ("
            + "; ".join(failed)
            + ")",
            "check the address (--hosts), the user (--ssh-user) and that the key (--ssh-key) "
            "is in the user's ~/.ssh/authorized_keys on every host",
        )


def host_check() -> str:
    """A setup command that stops `ray up` on a host whose Ray is missing or not the
    launcher's version, in one line the provider finds in the launcher's log."""
    want = version("ray")
    return (
        f": {HOST_CHECK}; v=$(ray --version 2>/dev/null | awk '{{print $NF}}'); "
        f'[ "$v" = "{want}" ] || {{ m=${{v:+Ray $v}}; echo "{HOST_CHECK}: host $(hostname) '
        f'has ${{m:-no ray command on the login PATH}}, the launcher Ray {want}" >&2; exit 1; }}'
    )


SETUP_STEP = re.compile(r"^\((\d+)/(\d+)\) (.*)")  # the updater's "(i/n) command" line
# Where the updater says the command failed (its own words, or the runner's).
SETUP_FAILED = (
    "Setup command failed",
    "SSH command failed",
    "Failed.",
    "New status: update-failed",
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \S+\s+[A-Z]+ \S+ -- ")  # Ray's log style off a terminal


def failed_setup(log: str, cfg: dict[str, Any]) -> tuple[str, list[str]] | None:
    """(the head's setup command that failed, its output's last lines) from `ray up`'s
    log, or None where no setup command failed. Ray prints the command cut to 30
    characters, so it is named from the config (Ray runs setup_commands, then
    head_setup_commands, on the head); its output is what the host printed, not Ray."""
    rows = []
    for raw in log.splitlines():
        ln = ANSI.sub("", raw).strip()
        rows.append((bool(RECORD.match(ln)), RECORD.sub("", ln)))
    group = max((i for i, (_, ln) in enumerate(rows) if "Running setup commands" in ln), default=-1)
    ran = [i for i in range(group + 1, len(rows)) if group >= 0 and SETUP_STEP.match(rows[i][1])]
    if not ran:
        return None
    end = next(
        (i for i in range(ran[-1] + 1, len(rows)) if rows[i][1].startswith(SETUP_FAILED)), -1
    )
    if end < 0:
        return None
    i, _, printed = SETUP_STEP.match(rows[ran[-1]][1]).groups()  # type: ignore[union-attr]
    cmds = [*cfg.get("setup_commands", []), *cfg.get("head_setup_commands", [])]
    cmd = cmds[int(i)] if int(i) < len(cmds) and printed.startswith(cmds[int(i)][:20]) else printed
    said = [ln for ray, ln in rows[ran[-1] + 1 : end] if ln and not ray]
    return cmd, [ln for ln in said if not ln.startswith("Shared connection to")][-3:]


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
