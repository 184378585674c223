"""A command's output whose reader is gone (`rayscale scaling | head`, a terminal closed,
a parent killed first) must not stop the teardown that follows an interruption: the
SIGTERM'd study of make e2e-k8s died writing its resume hint and left its cluster."""

from __future__ import annotations

import subprocess
import sys

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
