"""Faults for real on the local provider: a worker dies mid-search, Ctrl-C mid-`up`, load."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time

import psutil
import pytest
from conftest import (
    FAULT_JOB,
    RAYSCALE,
    ROOT,
    N,
    assert_all_gone,
    kill_all,
    recorded_pids,
    run_cli,
    tree_pids,
    wait_for_end,
    wait_for_progress,
)

pytestmark = pytest.mark.cluster


def test_worker_killed_mid_search_loses_nothing(tmp_path):
    state = tmp_path / "state"
    run_cli(
        "cluster", "up", "--workers", 2, "--memory-per-worker", 1.5, state_dir=state, check=True
    )
    procs, rec = recorded_pids(state)
    pids = tree_pids(procs)
    try:
        job_id = run_cli(
            "job",
            "submit",
            "--no-wait",
            "--",
            *FAULT_JOB,
            "--storage-path",
            tmp_path / "results",
            "--name",
            "fault",
            state_dir=state,
            check=True,
        ).stdout.strip()
        wait_for_progress(state, job_id, done=1)
        victim = psutil.Process(rec["workers"][1]["proc"]["pid"])
        raylet = next(p for p in victim.children(recursive=True) if p.name() == "raylet")
        raylet.send_signal(signal.SIGKILL)  # the node is gone, with the trial it was running
        status, logs = wait_for_end(state, job_id)
        assert status == "SUCCEEDED", logs[-3000:]
        faulty = json.loads((tmp_path / "results" / "fault" / "result.json").read_text())
        assert faulty["trials_completed"] == N and faulty["trials_errored"] == 0
        assert faulty["retried_trials"], (
            "a trial was running on the killed node: it must be retried"
        )
        retried = [t for t in faulty["trials"] if t["retries"]]
        assert retried and all(t["rounds"] == t["config"]["num_boost_round"] for t in retried)
        # The same search on the surviving worker, undisturbed: as good a result.
        p = run_cli(
            "job",
            "submit",
            "--json",
            "--timeout",
            400,
            "--",
            *FAULT_JOB,
            "--storage-path",
            tmp_path / "results",
            "--name",
            "calm",
            state_dir=state,
        )
        assert p.returncode == 0, p.stderr
        calm = json.loads(p.stdout)
        assert faulty["best_valid_rmse"] == pytest.approx(calm["best_valid_rmse"], rel=0.02)
        assert faulty["tuned"]["rmse"] == pytest.approx(calm["tuned"]["rmse"], rel=0.02)
    finally:
        run_cli("cluster", "down", state_dir=state)
    assert_all_gone(pids, rec["temp_root"])


def test_ctrl_c_during_cluster_up_leaves_nothing(tmp_path):
    state = tmp_path / "state"
    before = set(glob.glob("/tmp/rayscale-*"))
    env = dict(os.environ, RAYSCALE_STATE_DIR=str(state))
    cli = subprocess.Popen(
        [RAYSCALE, "cluster", "up", "--workers", "2", "--memory-per-worker", "1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started: set[int] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(started) < 8:  # head and workers are starting
        started |= {c.pid for c in psutil.Process(cli.pid).children(recursive=True)}
        time.sleep(0.2)
    assert len(started) >= 3
    cli.send_signal(signal.SIGINT)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 130, err
    assert err.strip().splitlines()[-1] == "rayscale: error: interrupted"
    assert "Traceback" not in err
    assert_all_gone(started)
    assert set(glob.glob("/tmp/rayscale-*")) == before
    assert not (state / "cluster.json").exists()


def test_six_jobs_back_to_back(cluster, tmp_path):
    """The Job API under load: every job finishes, with its own record, and is listed."""
    ids = {}
    for i in range(6):
        ids[i] = run_cli(
            "job",
            "submit",
            "--no-wait",
            "--",
            "--mode",
            "sequential",
            "--data",
            f"synthetic:rows=300,features=4,seed={i}",
            "--num-samples",
            2,
            "--max-rounds",
            5,
            "--seed",
            i,
            "--name",
            f"load-{i}",
            "--storage-path",
            tmp_path,
            state_dir=cluster,
            check=True,
        ).stdout.strip()
    assert len(set(ids.values())) == 6
    deadline = time.monotonic() + 400
    pending = dict(ids)
    while pending and time.monotonic() < deadline:
        listed = {
            j["submission_id"]: j["status"]
            for j in json.loads(run_cli("job", "list", "--json", state_dir=cluster).stdout)
        }
        pending = {
            i: j
            for i, j in pending.items()
            if listed.get(j) not in ("SUCCEEDED", "FAILED", "STOPPED")
        }
        time.sleep(2)
    assert not pending, f"jobs still running: {pending}"
    listed = {
        j["submission_id"]: j["status"]
        for j in json.loads(run_cli("job", "list", "--json", state_dir=cluster).stdout)
    }
    for i, job_id in ids.items():
        assert listed[job_id] == "SUCCEEDED"
        rec = json.loads((tmp_path / f"load-{i}" / "result.json").read_text())
        assert rec["name"] == f"load-{i}" and rec["data"].endswith(f"seed={i}")
        logs = run_cli("job", "logs", job_id, state_dir=cluster).stdout
        (line,) = [x for x in logs.splitlines() if x.startswith("RAYSCALE_RESULT ")]
        assert json.loads(line.split(" ", 1)[1])["name"] == f"load-{i}"


def test_head_killed_mid_search_then_resumed(tmp_path):
    """Head loss: every process of the cluster dies; `cluster up` + `job resume` finish it."""
    state = tmp_path / "state"
    results = tmp_path / "results"
    args = [*FAULT_JOB, "--storage-path", results]
    run_cli(
        "cluster", "up", "--workers", 2, "--memory-per-worker", 1.5, state_dir=state, check=True
    )
    procs, rec = recorded_pids(state)
    job_id = run_cli(
        "job", "submit", "--no-wait", "--", *args, "--name", "headloss", state_dir=state, check=True
    ).stdout.strip()
    wait_for_progress(state, job_id, done=2)
    doomed = tree_pids(procs)
    kill_all(doomed)  # the head machine dies: head, its driver and every worker with it
    assert_all_gone(doomed)
    # A new `up` on the same state dir notices the dead cluster, cleans it, starts afresh.
    run_cli(
        "cluster", "up", "--workers", 2, "--memory-per-worker", 1.5, state_dir=state, check=True
    )
    procs2, rec2 = recorded_pids(state)
    try:
        p = run_cli(
            "job", "resume", "headloss", "--json", "--", *args, state_dir=state, timeout=400
        )
        assert p.returncode == 0, p.stderr
        done = json.loads(p.stdout)
        assert done["trials_completed"] == N and done["num_samples"] == N
        ids = [t["trial_id"] for t in done["trials"]]
        assert len(ids) == N and len(set(ids)) == N  # all of them, none twice
        assert sorted(map(json.dumps, (t["config"] for t in done["trials"]))) == sorted(
            set(map(json.dumps, (t["config"] for t in done["trials"])))
        )
        assert all(t["rounds"] == t["config"]["num_boost_round"] for t in done["trials"])
    finally:
        pids2 = tree_pids(procs2)
        run_cli("cluster", "down", state_dir=state)
    assert_all_gone(pids2, rec2["temp_root"])


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def test_ctrl_c_during_scaling_leaves_nothing(tmp_path):
    """Ctrl-C while a study runs: the cluster it brought up goes, and nothing else stays."""
    state = tmp_path / "state"
    before = set(glob.glob("/tmp/rayscale-*"))
    env = dict(os.environ, RAYSCALE_STATE_DIR=str(state))
    cli = subprocess.Popen(
        [
            RAYSCALE,
            "scaling",
            "--workers",
            "1,2",
            "--memory-per-worker",
            "1",
            "--out",
            str(tmp_path / "out"),
            "--",
            *map(str, FAULT_JOB),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the first job of the study is running
        started |= {c.pid for c in psutil.Process(cli.pid).children(recursive=True)}
        if any("tune_xgboost.py" in _cmdline(pid) for pid in started):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the study never started its job")
    started |= {c.pid for c in psutil.Process(cli.pid).children(recursive=True)}
    cli.send_signal(signal.SIGINT)
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "rayscale: error: interrupted"
    assert "Traceback" not in err
    assert_all_gone(started)
    assert set(glob.glob("/tmp/rayscale-*")) == before
    assert not (state / "cluster.json").exists()
