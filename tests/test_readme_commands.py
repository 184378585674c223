"""The README's first commands, typed as written in a fresh shell after its install line:
they work, put the state and the results under the directory they are typed in, and
`cluster down` leaves nothing running."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, assert_all_gone, recorded_pids, tree_pids

pytestmark = pytest.mark.cluster

ACTIVATE = Path(sys.executable).parent / "activate"


def first_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Install, and the first commands", 1)[1].split("```bash\n", 1)[1]
    lines = block.split("```", 1)[0].splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.startswith("rayscale ")]


def test_the_readmes_first_commands_work_as_written(tmp_path):
    commands = first_commands()
    assert [c.split()[1:3] for c in commands] == [
        ["cluster", "up"], ["job", "submit"], ["cluster", "status"], ["job", "logs"],
        ["cluster", "down"],
    ]  # fmt: skip
    # A new shell: the README's activate line, none of the test session's settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYSCALE_", "RAY_"))}
    said, pids = {}, set()
    try:
        for cmd in commands:
            if "raysubmit_..." in cmd:  # the ID `submit` printed, as the comment says
                job_id = re.search(r"submitted (raysubmit_\w+)", said["submit"]).group(1)
                cmd = cmd.replace("raysubmit_...", job_id)
            p = subprocess.run(
                ["bash", "-c", f". {ACTIVATE} && {cmd}"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert p.returncode == 0, f"{cmd}:\n{p.stdout}\n{p.stderr}"
            said[cmd.split()[2]] = p.stdout + p.stderr
            if cmd.split()[1:3] == ["cluster", "up"]:
                procs, rec = recorded_pids(tmp_path / ".rayscale")
                pids = tree_pids(procs)
    finally:
        if (tmp_path / ".rayscale" / "cluster.json").exists():  # a command failed: clean up
            subprocess.run(
                ["bash", "-c", f". {ACTIVATE} && rayscale cluster down"], cwd=tmp_path, env=env
            )
    assert "2 workers alive" in said["status"]
    assert "trials completed" in said["submit"]
    assert "RAYSCALE_RESULT " in said["logs"]  # the job's whole log, its record at the end
    # Where the results land: under the directory the commands were typed in, and it says so.
    (record,) = (tmp_path / "results").glob("tune-*.json")
    assert f"saved to {record}" in said["submit"]
    assert json.loads(record.read_text())["trials_completed"] == 16
    assert (tmp_path / "results" / record.stem / "rayscale-result.json").exists()
    assert_all_gone(pids, rec["temp_root"])
    assert not (tmp_path / ".rayscale" / "cluster.json").exists()
