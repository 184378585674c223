"""A command's output whose reader is gone (`rayscale scaling | head`, a terminal closed,
a parent killed first) must not stop the teardown that follows an interruption: the
SIGTERM'd study of make e2e-k8s died writing its resume hint and left its cluster."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

SCRIPT = """
import sys
from rayscale import interrupts
{install}
sys.stdin.read()  # until the test has closed the reading end of stdout
for _ in range(3):
    print("x" * 70000, flush=True)  # more than a pipe holds
open(sys.argv[1], "w").write("undone")
"""


def _run(tmp_path, install: str) -> tuple[subprocess.Popen, str]:
    done = tmp_path / ("done" if install else "done-without")
    p = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(install=install), str(done)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    p.stdout.close()  # the reader goes away
    _, err = p.communicate(b"", timeout=60)
    return p, (done.read_text() if done.exists() else err.decode())


def test_writes_to_a_reader_that_is_gone_do_not_stop_the_command(tmp_path):
    p, said = _run(tmp_path, "interrupts.install()")
    assert p.returncode == 0 and said == "undone", said
    # Without it, the same writes raise, and what came after them never runs.
    p, said = _run(tmp_path, "")
    assert p.returncode != 0 and "BrokenPipeError" in said


# A node's process has started, and the signal lands before the provider has recorded it:
# the teardown that follows must still find it (a stand-in node: `sleep`).
DEFERRED = """
import contextlib, os, signal, sys
from pathlib import Path
from rayscale import interrupts, procs
interrupts.install()
rec = {{}}
block = interrupts.deferred() if sys.argv[2] == "deferred" else contextlib.nullcontext()
try:
    with block:
        node = procs.spawn(["sleep", "60"], dict(os.environ), Path(sys.argv[1]))
        print("started", node["pid"], flush=True)
        os.kill(os.getpid(), signal.{sig})  # after the start, before the record
        rec["node"] = node
        print("recorded", flush=True)
    print("went on", flush=True)
except KeyboardInterrupt:  # Ctrl-C, and SIGTERM / SIGHUP as interrupts.install takes them
    if "node" in rec:
        procs.stop(rec["node"])
        print("stopped", flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_while_a_node_starts_waits_until_it_is_recorded(tmp_path, sig):
    def run(mode: str) -> tuple[list[str], int]:
        p = subprocess.run(
            [sys.executable, "-c", DEFERRED.format(sig=sig), str(tmp_path / "node.log"), mode],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        out = p.stdout.split()
        assert out[0] == "started", p.stdout + p.stderr
        return out[2:], int(out[1])

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    said, pid = run("deferred")
    assert said == ["recorded", "stopped"] and gone(pid), said  # never "went on"
    # Without it the signal comes before the record, and the node outlives the command.
    said, pid = run("plain")
    try:
        assert said == [] and not gone(pid)
    finally:
        psutil.Process(pid).kill()
