"""Processes rayscale starts itself: spawn in their own session, stop by recorded PID.

Every node process is started as the leader of a new session, so its process group holds
exactly the Ray daemons it forks. Stopping a node signals that group (by the PID we
recorded) and then any recorded descendant still alive; nothing is matched by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

# Ports handed out recently: a node started a moment ago may not have bound its ports yet,
# and must not be given them again, by this process or by another rayscale on the machine
# (two clusters starting at once: a test's two lanes, or two terminals).
_HANDED: dict[int, float] = {}
_HANDED_FOR_S = 300.0


def _ports_file() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "rayscale" / "ports-handed.json"


@contextlib.contextmanager
def _handed() -> Iterator[dict[int, float]]:
    """The ports handed out in the last few minutes on this machine, under its lock; what the
    caller adds is written back. Where the shared file cannot be written (a read-only home),
    this process's own record still holds."""
    now = time.time()
    path = _ports_file()
    with contextlib.ExitStack() as stack:
        shared: dict[int, float] = {}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = stack.enter_context(open(path.with_suffix(".lock"), "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)  # released as the file closes
        except OSError:
            path = None
        if path:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                shared = {int(k): float(v) for k, v in json.loads(path.read_text()).items()}
        handed = {
            port: at for port, at in {**shared, **_HANDED}.items() if now - at <= _HANDED_FOR_S
        }
        yield handed
        _HANDED.clear()
        _HANDED.update(handed)
        if path:
            with contextlib.suppress(OSError):
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(handed))
                os.replace(tmp, path)


def _ephemeral() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (outgoing connections, bind to 0)."""
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int) -> list[int]:
    """n distinct ports free on every interface, held open together while they are chosen.

    Taken between Ray's default worker ports (10002-19999) and the kernel's ephemeral
    range, where that leaves room (20000 up to it): a port the kernel might hand to
    anyone's outgoing connection, or to a Ray process binding port 0, in the moment between
    this pick and the node's own bind would fail that node (seen: a raylet's gRPC server,
    "Address already in use"). Nor is a port handed out again within a few minutes by any
    rayscale on this machine."""
    import random

    lo, _ = _ephemeral()
    pool = range(20000, lo) if lo - 20000 >= 1000 else None
    socks: list[socket.socket] = []
    with _handed() as handed:
        try:
            rng = random.SystemRandom()
            tries = 0
            while len(socks) < n:
                tries += 1
                port = rng.choice(pool) if pool and tries < 2000 else 0
                if port in handed:
                    continue
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.bind(("0.0.0.0", port))
                except OSError:
                    s.close()
                    continue
                if s.getsockname()[1] in handed:
                    s.close()
                    continue
                socks.append(s)
            ports = [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()
        now = time.time()
        for port in ports:
            handed[port] = now
    return ports


def last_line(log: str | Path, width: int = 160) -> str:
    """A log's last non-blank line, cut to `width`: where `ray start` failed, its reason (the
    exception's line), quoted in the error so it is seen without opening the file."""
    with contextlib.suppress(OSError):
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
        line = next((ln for ln in reversed(lines) if ln), "")
        return line if len(line) <= width else line[: width - 1] + "…"
    return ""


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def spawn(argv: list[str], env: dict[str, str], log: Path) -> dict:
    """Start argv as a session leader; return what is needed to find it again."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        p = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return {
        "pid": p.pid,
        "create_time": psutil.Process(p.pid).create_time(),
        "start_ticks": start_ticks(p.pid),
        "log": str(log),
    }


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (Linux), or None elsewhere.

    Unlike psutil's create_time, which is derived from the wall clock's idea of boot time,
    this does not move when the clock is stepped (NTP, VM clock sync, a laptop waking):
    seen here, a step of 12 s made every running cluster look dead.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(rec: dict) -> bool:
    """Is the recorded process still the one we started (guards against PID reuse)?"""
    try:
        p = psutil.Process(rec["pid"])
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        if rec.get("start_ticks") is not None:
            return start_ticks(p.pid) == rec["start_ticks"]
        # No /proc: create_time, with room for clock steps but not for a recycled PID.
        return abs(p.create_time() - rec["create_time"]) < 120
    except (psutil.NoSuchProcess, KeyError, ValueError):  # ValueError: no PID (-1)
        return False


def _group_members(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(p.pid) == pgid:
                out.append(p)
    return out


def stop(rec: dict, grace: float = 15.0) -> None:
    """Stop a spawned process, its process group and every descendant, by PID.

    SIGTERM goes to the leader alone: `ray start --block` then drains its node and stops
    its daemons in order (under a second). Signalling the whole group at once makes the
    raylet and GCS race that shutdown and hang. Whatever is left after the grace period
    is killed.
    """
    if not alive(rec):
        _reap(rec["pid"])
        return
    pid = rec["pid"]
    root = psutil.Process(pid)
    tree = [root]
    with contextlib.suppress(psutil.Error):
        tree += root.children(recursive=True)
    tree = list({p.pid: p for p in tree + _group_members(pid)}.values())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    _, left = psutil.wait_procs(tree, timeout=grace)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(left, timeout=5)
    _reap(pid)


def _reap(pid: int) -> None:
    # Our own children become zombies until waited for; a test process starts many.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tree(pids) -> dict[int, psutil.Process]:
    """The given processes and all their descendants, by PID; gone ones are left out."""
    seen: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            for q in [p, *p.children(recursive=True)]:
                seen[q.pid] = q
    return seen


def listens(pids, port: int) -> bool:
    """Whether one of the given processes or their descendants listens on TCP `port`: a
    token goes only to the cluster's own dashboard, never to whatever took its port."""
    for p in tree(pids).values():
        with contextlib.suppress(psutil.Error):
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                for c in p.net_connections(kind="tcp")
            ):
                return True
    return False


def held_by_me(port: int) -> bool:
    """Whether TCP `port` is listened on, and only by processes of this user: a forward's
    tunnel may be an SSH connection master that no process of ours started (ssh's
    ControlMaster), but a process of another user is never sent the token (one of ours
    could read the token file anyway)."""
    me, owners = os.getuid(), set()
    if os.path.exists("/proc/net/tcp"):  # Linux: every socket's owner, readable by any user
        for path in ("/proc/net/tcp", "/proc/net/tcp6"):  # tcp6 is absent without IPv6
            with contextlib.suppress(FileNotFoundError), open(path) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        owners.add(int(fields[7]))
        return owners == {me}
    for q in psutil.process_iter():  # elsewhere: the sockets of our own processes
        with contextlib.suppress(psutil.Error):
            if q.uids().real == me and any(
                c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                for c in q.net_connections(kind="tcp")
            ):
                return True
    return False


def rss_bytes(pids: list[int], pss: bool = False) -> int:
    """Resident memory of the given processes and all their descendants; `pss`: each
    shared page split among the processes that map it, so separate trees add up."""
    total = 0
    for q in tree(pids).values():
        with contextlib.suppress(psutil.Error):
            total += q.memory_full_info().pss if pss else q.memory_info().rss
    return total


def cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a process and each of its descendants, by PID."""
    out: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
    return out


def tool(name: str) -> str | None:
    """An external command: $RAYSCALE_<NAME> where the user points at one, else PATH's."""
    import shutil

    return os.environ.get(f"RAYSCALE_{name.upper()}") or shutil.which(name)


def run_logged(argv: list[str], log: Path, timeout: float = 900.0, check: bool = True) -> int:
    """Run a tool (ray, kind, helm, kubectl) to completion, its output appended to log.

    With check, a failure is a UserError quoting the tool's last line and naming the log.
    """
    from rayscale.errors import UserError

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            rc = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            ).returncode
        except FileNotFoundError:
            raise UserError(
                f"the command {argv[0]} is not installed",
                "install it, or point the matching RAYSCALE_* variable at it",
            ) from None
        except subprocess.TimeoutExpired:
            out.write(f"timed out after {timeout:.0f} s\n".encode())
            rc = -1
    if check and rc != 0:
        said = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        name = os.path.basename(argv[0])
        raise UserError(
            f"`{name} {argv[1] if len(argv) > 1 else ''}` failed: {said[-1][:300] if said else rc}",
            f"read {log}",
        )
    return rc
