"""A managed port-forward: keeps a tunnel command running, restarting it when it drops.

`kubectl port-forward` exits when a connection idles out, and an SSH tunnel (`ray
dashboard`) dies with the network: a long job then loses its dashboard half-way, a common
complaint. And `kubectl port-forward svc/...` attaches to one pod: when that pod is
replaced it keeps running, listening, forwarding nowhere (kubernetes/kubernetes#67059).
rayscale runs the tunnel under this small supervisor, which restarts it (with a short
back-off) when it exits, and also when the endpoint behind it stops answering HTTP
(`--port`), so that it attaches again to whatever the Service points at now. The
supervisor is started as a session leader and stopped by its recorded PID, like a node.

    python -m rayscale.forward --port 18265 -- kubectl port-forward svc/x 18265:8265
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rayscale import interrupts, procs

BACKOFF_MAX = 5.0
CHECK_S = 2.0  # how often the supervisor asks the forwarded endpoint for an HTTP answer
DEAD_AFTER = 3  # checks in a row without one: the tunnel is restarted


def start(
    argv: list[str], port: int, log: Path, env: dict[str, str] | None = None, timeout: float = 30.0
) -> dict:
    """Start the supervised tunnel; return its process record once 127.0.0.1:port answers.

    Raises TimeoutError (with the log's last line) when it never answers.
    """
    with interrupts.deferred():  # started is recorded: an interrupt then stops it below
        rec = procs.spawn(
            [sys.executable, "-m", "rayscale.forward", "--port", str(port), "--", *argv],
            dict(env or os.environ),
            log,
        )
    rec["port"] = port
    try:
        up = wait(rec, timeout)
    except BaseException:  # interrupted while it opens: no supervisor is left behind
        procs.stop(rec, grace=3)
        raise
    if not up:
        procs.stop(rec, grace=3)
        said = [
            ln
            for ln in log.read_text(errors="replace").splitlines()
            if ln.strip() and not ln.startswith("rayscale.forward:")
        ]
        tail = said[-1].strip() if said else "no output"
        raise TimeoutError(tail)
    return rec


def wait(rec: dict, timeout: float) -> bool:
    """Whether the supervisor lives and its port is listened on by this user's processes
    only, within `timeout`: an open port alone may be another user's, and the cluster's
    token must not go there."""
    return (
        procs.wait_for(
            lambda: not procs.alive(rec) or procs.held_by_me(rec["port"]), timeout, interval=0.1
        )
        and procs.alive(rec)
        and procs.held_by_me(rec["port"])
    )


def answers_http(port: int, timeout: float = 3.0) -> bool:
    """Whether something behind 127.0.0.1:port answers an HTTP request (any status: a 401
    is an answer). A tunnel whose far end is gone accepts, then closes or stays silent."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /api/version HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return s.recv(5) == b"HTTP/"
    except OSError:
        return False


def _watch(child: subprocess.Popen, port: int | None, stopping) -> str | None:
    """Wait for the tunnel to exit; with a port, stop it (and say why) once its endpoint
    has not answered for DEAD_AFTER checks in a row."""
    if port is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait()
        return None
    misses = 0
    while child.poll() is None and not stopping():
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=CHECK_S)
        if child.poll() is not None or stopping():
            break
        if answers_http(port):
            misses = 0
        else:
            misses += 1
            if misses >= DEAD_AFTER:
                child.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=5)
                if child.poll() is None:
                    child.kill()
                    child.wait()
                return f"no HTTP answer through the tunnel for {misses} checks"
    return None


def supervise(argv: list[str], port: int | None = None) -> int:
    child: subprocess.Popen | None = None
    stopping = False

    def on_term(signum, frame):
        nonlocal stopping
        stopping = True
        if child and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    backoff, restarts = 0.5, 0
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        why = _watch(child, port, lambda: stopping)
        if stopping:
            break
        if why:  # its far end went away: attach again at once
            print(f"rayscale.forward: {why}; restarting the tunnel", flush=True)
            restarts += 1
            backoff = 0.5
            continue
        # A tunnel that ran a while before dropping is retried at once; one that fails
        # straight away backs off, so a dead cluster does not spin the CPU.
        backoff = 0.5 if time.monotonic() - started > 10 else min(BACKOFF_MAX, backoff * 2)
        restarts += 1
        print(
            f"rayscale.forward: tunnel exited with {child.returncode}; restart {restarts} "
            f"in {backoff:.1f} s",
            flush=True,
        )
        time.sleep(backoff)
    if child and child.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
        child.kill()
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    port = None
    if args[:1] == ["--port"] and len(args) > 1:
        port, args = int(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("usage: python -m rayscale.forward [--port N] -- COMMAND...")
    sys.exit(supervise(args, port))
