"""`job results --download` and `job submit --download` on a real local cluster: the job's
Tune experiment comes home through the Job API (a packer job on the head), byte for byte,
with the best trial's best checkpoint and no other. The local nodes share this disk, so the
copy is checked against the files Tune wrote; on separate nodes, tests/test_docker.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.cluster

TINY = ["--data", "synthetic:rows=600,features=6,noise=0.5,seed=1", "--max-rounds", 20]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _checkpoints(files) -> set[str]:
    return {
        "/".join(r.split("/")[:2]) for r in files if "/checkpoint_" in f"/{r.rsplit('/', 1)[0]}"
    }


def test_a_jobs_experiment_comes_home_whole(cluster, tmp_path):
    name = f"dl-{os.getpid()}"
    p = run_cli(
        "job", "submit", "--json", "--download", tmp_path / "a", "--", *TINY,
        "--num-samples", 3, "--scheduler", "fifo", "--checkpoint-every", 5,
        "--checkpoint-min-s", 0, "--name", name, state_dir=cluster, timeout=400,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert f"downloaded {os.environ['RAYSCALE_RESULTS_DIR']}/{name} to" in p.stderr, p.stderr

    original = Path(os.environ["RAYSCALE_RESULTS_DIR"]) / name
    home = _files(tmp_path / "a" / name)
    there = _files(original)
    # Every file but the checkpoints, byte for byte; of the checkpoints, exactly one.
    plain = {r: b for r, b in there.items() if not _checkpoints([r])}
    assert {r: b for r, b in home.items() if not _checkpoints([r])} == plain
    assert json.loads(home["rayscale-result.json"])["trials_completed"] == rec["trials_completed"]
    trial_dirs = {r.split("/")[0] for r in home if r.endswith("/result.json")}
    assert len(trial_dirs) == rec["trials_completed"] == 3
    (best,) = _checkpoints(home)
    assert len(_checkpoints(there)) > 1, "the run should have left several checkpoints"
    assert {r: b for r, b in home.items() if r.startswith(best)} == {
        r: b for r, b in there.items() if r.startswith(best + "/")
    }
    # Tune's best trial by the run's metric and mode: the one the record names best.
    params = json.loads(home[f"{best.split('/')[0]}/params.json"])["cfg"]  # the job's space
    assert all(params.get(k) == v for k, v in rec["best_config"].items()), (params, rec)

    # The same run by job ID and by run name (as `job resume` names it).
    job_id = next(
        j["submission_id"]
        for j in json.loads(run_cli("job", "list", "--json", state_dir=cluster).stdout)
        if f"--name {name}" in j.get("entrypoint", "")
    )
    by_id = run_cli("job", "results", job_id, "--download", tmp_path / "b", state_dir=cluster)
    assert by_id.returncode == 0, by_id.stderr
    by_name = run_cli("job", "results", name, "--download", tmp_path / "c", state_dir=cluster)
    assert by_name.returncode == 0, by_name.stderr
    assert _files(tmp_path / "b" / name) == _files(tmp_path / "c" / name) == home

    # A folder that holds the run already, and a run that does not exist: one line each,
    # and no partial download left behind.
    again = run_cli("job", "results", name, "--download", tmp_path / "c", state_dir=cluster)
    assert_one_line_error(again, "exists already", "another --download folder")
    missing = run_cli("job", "results", "no-such-run", "--download", tmp_path / "d",
                      state_dir=cluster)  # fmt: skip
    assert_one_line_error(missing, "could not download", "no-such-run")
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").iterdir())
