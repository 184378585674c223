"""A managed port-forward: keeps a tunnel command running, restarting it when it drops.

`kubectl port-forward` exits when its pod restarts or a connection idles out, and an SSH
tunnel (`ray dashboard`) dies with the network: a long job then loses its dashboard
half-way, a common complaint. rayscale runs the tunnel under this small supervisor, which
restarts it (with a short back-off) for as long as the cluster is recorded. The
supervisor is started as a session leader and stopped by its recorded PID, like a node.

    python -m rayscale.forward -- kubectl port-forward svc/x 18265:8265
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rayscale import procs

BACKOFF_MAX = 5.0


def start(
    argv: list[str], port: int, log: Path, env: dict[str, str] | None = None, timeout: float = 30.0
) -> dict:
    """Start the supervised tunnel; return its process record once 127.0.0.1:port answers.

    Raises TimeoutError (with the log's last line) when it never answers.
    """
    rec = procs.spawn(
        [sys.executable, "-m", "rayscale.forward", "--", *argv], dict(env or os.environ), log
    )
    rec["port"] = port
    if not wait(rec, timeout):
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
    return procs.wait_for(
        lambda: procs.port_open("127.0.0.1", rec["port"]) or not procs.alive(rec),
        timeout,
        interval=0.1,
    ) and procs.alive(rec)


def supervise(argv: list[str]) -> int:
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
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait()
        if stopping:
            break
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
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("usage: python -m rayscale.forward -- COMMAND...")
    sys.exit(supervise(args))
