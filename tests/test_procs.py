"""rayscale.procs across processes: what two rayscale commands on one machine share."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rayscale import procs

# A pool of 1000 ports (the kernel's range is said to start at 21000): two picks of 300
# drawn without regard to each other would share about 90.
PICK = (
    "import json, sys; from rayscale import procs; procs._ephemeral = lambda: (21000, 60999); "
    "print(json.dumps(procs.free_ports(int(sys.argv[1]))))"
)


def _pick(env: dict[str, str], n: int = 300) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", PICK, str(n)], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def test_two_processes_are_never_handed_the_same_port(tmp_path):
    """A port one rayscale process picked (a node that has not bound it yet) is not handed
    to another within minutes: two clusters starting at once on one machine (a test run's
    two lanes, two terminals) cannot take each other's ports."""
    # The machine's own record, as every rayscale here keeps it: a test lane beside this one
    # then skips these ports too, and never loses one to this test's brief binds.
    first, second = _pick(dict(os.environ)), _pick(dict(os.environ))
    assert len(set(first)) == len(set(second)) == 300
    assert not set(first) & set(second)
    handed = json.loads(procs._ports_file().read_text())
    assert set(first) | set(second) <= set(map(int, handed))


def test_a_home_that_cannot_be_written_still_gives_ports(tmp_path):
    """Where the shared record cannot be kept (a read-only cache dir), ports are still handed
    out, each process keeping its own."""
    (tmp_path / "rayscale").write_text("a file where the folder would go")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    assert len(set(_pick(env, 50))) == 50
