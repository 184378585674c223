"""Faults for real on the local provider: a worker dies mid-search, Ctrl-C mid-`up`, load."""

from __future__ import annotations

import contextlib
import json
import os
import re
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
    assert_one_line_error,
    kill_all,
    recorded_pids,
    run_cli,
    tree_pids,
    wait_for_progress,
)

from bench import load, storage_faults
from rayscale.providers.local import LocalProvider
from rayscale.state import StateDir

pytestmark = pytest.mark.cluster


def _running_job(state, not_this: str | None, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = run_cli("job", "list", "--json", state_dir=state)
        running = [
            r["submission_id"]
            for r in (json.loads(p.stdout) if p.returncode == 0 else [])
            if r["status"] == "RUNNING"
            and r["submission_id"] != not_this
            and "tune_xgboost.py" in r["entrypoint"]  # not the study's reader of a job's output
        ]
        if running:
            return running[0]
        time.sleep(0.5)
    raise AssertionError("no job of the study started")


@pytest.mark.drill
def test_chaos_a_worker_lost_mid_study_is_replaced_and_its_point_marked(tmp_path):
    """A study on 1, 2 workers; one worker node dies (every process SIGKILLed) mid-search at
    2 workers. The study replaces it (as an autoscaler would), Tune retries the trial it
    ran, and the point is marked disturbed; the 1-worker point is the calm run of the same
    configs to compare with. `make chaos` runs the longer version (bench/chaos.py)."""
    state, out = tmp_path / "state", tmp_path / "study"
    env = {**os.environ, "RAYSCALE_STATE_DIR": str(state)}
    env.pop("RAY_ADDRESS", None)
    args = ["--workers", "1,2", "--memory-per-worker", "1.5", "--baselines", "none", "--out"]
    study_proc = subprocess.Popen(
        [RAYSCALE, "scaling", *args, str(out), "--", *map(str, FAULT_JOB)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        calm_job = _running_job(state, None)
        faulty_job = _running_job(state, calm_job)
        wait_for_progress(state, faulty_job, done=1)
        procs, rec = recorded_pids(state)
        victim = rec["workers"][-1]
        kill_all(tree_pids([victim["proc"]]))  # the machine is gone, with its trial
        stdout, stderr = study_proc.communicate(timeout=600)
    finally:
        study_proc.kill()
    assert study_proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    study = json.loads((out / "study.json").read_text())
    (calm,) = study["points"][0]["runs"]
    (faulty,) = study["points"][1]["runs"]
    assert calm["job_id"] == calm_job and faulty["job_id"] == faulty_job
    assert not calm["disturbed_by"] and not study["points"][0]["disturbed"]
    # Nothing lost: every trial completed, each to the rounds it ran undisturbed.
    assert calm["trials_completed"] == faulty["trials_completed"] == N
    rounds = sorted(t["rounds"] for t in calm["timeline"])
    assert sorted(t["rounds"] for t in faulty["timeline"]) == rounds
    # The trial on the lost node was retried, the node replaced, the point marked.
    assert faulty["retries"] >= 1 and faulty["workers_replaced"] == 1, faulty["disturbed_by"]
    # The retried trial went on from its checkpoint, which carried its CPU clock too.
    assert 0 < faulty["sum_train_cpu_s"] <= faulty["sum_train_s"] * 1.05 + 0.05
    assert study["points"][1]["disturbed"] and "DISTURBED" in stdout
    # Its time is no speedup to read, nor data for the replay model.
    assert study["disturbed_points"] == [2]
    assert all(v["workers"] == 1 for v in study["prediction"]["validation"])
    assert faulty["best_metric"] == pytest.approx(calm["best_metric"], rel=0.02)
    assert not (state / "cluster.json").exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGHUP"])
def test_an_interrupted_cluster_up_leaves_nothing(tmp_path, sig, own_tmpdir):
    """Ctrl-C, or the terminal closed under it (SIGHUP, a lost SSH session): the half-started
    nodes are stopped, the temp dirs removed, the record cleared. After a hang-up the
    terminal is gone, so teardown must not die writing to it."""
    import fcntl
    import pty
    import termios

    state = tmp_path / "state"
    env = dict(os.environ, RAYSCALE_STATE_DIR=str(state), TMPDIR=str(own_tmpdir))
    tty = pty.openpty() if sig == "SIGHUP" else None
    out_to = tty[1] if tty else subprocess.PIPE
    cli = subprocess.Popen(
        [RAYSCALE, "cluster", "up", "--workers", "2", "--memory-per-worker", "1"],
        env=env,
        cwd=ROOT,
        stdout=out_to,
        stderr=out_to,
        text=True,
        start_new_session=bool(tty),
        # Its own terminal, as in a terminal window: closing it hangs the command up.
        preexec_fn=(lambda: fcntl.ioctl(1, termios.TIOCSCTTY, 0)) if tty else None,
    )
    started: set[int] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(started) < 8:  # head and workers are starting
        started |= {c.pid for c in psutil.Process(cli.pid).children(recursive=True)}
        time.sleep(0.2)
    assert len(started) >= 3
    if tty:
        for fd in tty:  # the window closes: the kernel sends SIGHUP
            os.close(fd)
    else:
        cli.send_signal(signal.SIGINT)
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == 128 + getattr(signal, sig), err
    if not tty:
        assert err.strip().splitlines()[-1] == "rayscale: error: interrupted"
        assert "Traceback" not in err
    assert_all_gone(started)
    assert not list(own_tmpdir.glob("rayscale-*")), "temp dirs left behind"
    assert not (state / "cluster.json").exists()


@pytest.mark.drill
@pytest.mark.parametrize("fault", ["vanish", "full"])
def test_storage_fault_mid_search_ends_it_and_resume_keeps_the_finished_trials(
    cluster, tmp_path, fault
):
    """After 2 finished trials the search's folder under the storage path is deleted (a
    clean-up job, a volume unmounted), or the storage path fills up (another writer takes
    what is left). Every trial after it would fail the same way, so the search ends at once
    with one line. Then (room made) `job resume` runs the rest and completes the search:
    after a deletion it keeps every trial that had finished and restarts those whose
    checkpoints vanished; after a full disk it puts back the last whole state the job kept
    (trials finished after Tune's last save run again). `make storage-faults` runs the
    longer version (bench/storage_faults.py)."""
    if fault == "full" and os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    name = f"storage-{fault}"
    results = tmp_path / "results"
    args = [
        "--data", "synthetic:rows=40000,features=20,seed=2", "--num-samples", N,
        "--max-rounds", 300, "--scheduler", "fifo", "--checkpoint-every", 30,
        "--checkpoint-min-s", 0, "--storage-path", results,
    ]  # fmt: skip
    env = {**os.environ, "RAYSCALE_STATE_DIR": str(cluster)}
    env.pop("RAY_ADDRESS", None)
    with contextlib.ExitStack() as stack:
        if fault == "full":
            stack.enter_context(storage_faults.tmpfs(results, "64m"))
        cli = subprocess.Popen(
            [RAYSCALE, "job", "submit", "--", *map(str, args), "--name", name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        try:
            job_id = _running_job(cluster, None)
            wait_for_progress(cluster, job_id, done=2)
            if fault == "full":
                filler = storage_faults.fill(results)
            else:
                storage_faults.vanish(results / name)
            out, err = cli.communicate(timeout=300)
        finally:
            cli.kill()
        what = "no space left" if fault == "full" else "the search's folder there vanished"
        p = subprocess.CompletedProcess(cli.args, cli.returncode, out, err)
        assert_one_line_error(p, f"--storage-path {results}: {what}", f"job resume {name}")
        finished = int(re.search(r" after (\d+) finished trials", err).group(1))
        assert 2 <= finished < N, err
        logs = run_cli("job", "logs", job_id, state_dir=cluster).stdout
        done_before = {
            json.loads(line.split(" ", 1)[1])["trial"]
            for line in logs.splitlines()
            if line.startswith("RAYSCALE_PROGRESS")
        }
        assert len(done_before) == finished
        # Ended at the first failure, not after every trial's four tries.
        faults = ("Unable to set up cluster storage", "does not exist on", "No space left")
        assert sum(logs.count(f) for f in faults) < 8, logs[-3000:]
        if fault == "full":
            filler.unlink()  # room made
        resumed_at = time.time()
        p = run_cli("job", "resume", name, "--json", "--", *args, state_dir=cluster, timeout=400)
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["trials_completed"] == N and not record["trials_errored"], record["trials"]
    assert all(t["rounds"] == t["config"]["num_boost_round"] for t in record["trials"])
    before = [t for t in record["trials"] if t["trial_id"] in done_before]
    kept = [t for t in before if t["ended_at"] < resumed_at]
    if fault == "vanish":
        assert len(kept) == finished  # the finished trials are in the record, not run again
    # A full disk can cut Tune's last state save short: the job puts back the last whole
    # copy it kept, and trials that finished after that save ran again (none is lost).


def test_jobs_from_four_clients_at_once(cluster, tmp_path):
    """The Job API under load (`make load` runs 100): 4 jobs from 4 clients at once all
    succeed, each result its own, all listed; the head's memory falls back after them."""
    p = LocalProvider(StateDir(cluster))
    figures = load.run(p.endpoint(), p.head_pids(), 4, 4, tmp_path)
    assert figures["succeeded"] == 4 and figures["lost"] == 0, figures["outcomes"]
    assert len({r["job_id"] for r in figures["outcomes"]}) == 4
    assert figures["jobs_listed"] >= 4
    # Four drivers at once on the head, then none: what they used is given back.
    assert figures["head_rss_peak_gib"] > figures["head_rss_start_gib"]
    assert figures["head_rss_end_gib"] < figures["head_rss_start_gib"] + 0.5, figures


@pytest.mark.drill
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
