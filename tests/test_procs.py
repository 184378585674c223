"""rayscale.procs across processes: what two rayscale commands on one machine share."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# A pool of 1000 ports (the kernel's range is said to start at 21000): two picks of 300
# drawn without regard to each other would share about 90.
PICK = (
    "import json; from rayscale import procs; procs._ephemeral = lambda: (21000, 60999); "
    "print(json.dumps(procs.free_ports(300)))"
)


def _pick(env: dict[str, str]) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", PICK], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def test_two_processes_are_never_handed_the_same_port(tmp_path):
    """A port one rayscale process picked (a node that has not bound it yet) is not handed
    to another within minutes: two clusters starting at once on one machine (a test run's
    two lanes, two terminals) cannot take each other's ports."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    first, second = _pick(env), _pick(env)
    assert len(set(first)) == len(set(second)) == 300
    assert not set(first) & set(second)
    handed = json.loads((tmp_path / "rayscale" / "ports-handed.json").read_text())
    assert set(map(int, handed)) == set(first) | set(second)


def test_a_home_that_cannot_be_written_still_gives_ports(tmp_path):
    """Where the shared record cannot be kept (a read-only cache dir), ports are still handed
    out, each process keeping its own."""
    (tmp_path / "rayscale").write_text("a file where the folder would go")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    assert len(set(_pick(env))) == 300
