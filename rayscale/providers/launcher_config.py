"""The cluster launcher's YAML as the ray-up provider renders it (the worker count pinned,
the token mounted, on-prem hosts filled in and checked first), and what `ray up`'s log
says of a setup command that failed."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rayscale import procs, runtime
from rayscale.errors import UserError, read_yaml

TOKEN_SOURCE = "~/.ray/auth_token"


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


def set_hosts(cfg: dict[str, Any], options: Any) -> None:
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
