"""A user's own Tune scripts, unchanged Tune examples from the `ray` wheel, through
`rayscale job submit --working-dir`, `rayscale scaling --working-dir` and `rayscale plan`,
on a real local cluster; and a cluster that asks for no token, as `ray start --head` makes
by default."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray.tune.examples
from conftest import TINY, assert_one_line_error, run_cli

from rayscale import procs

pytestmark = pytest.mark.cluster

EXAMPLES = Path(ray.tune.examples.__file__).parent


def _example(tmp_path: Path, name: str) -> Path:
    """A folder holding the wheel's example NAME, byte for byte."""
    d = tmp_path / name.removesuffix(".py")
    d.mkdir()
    shutil.copy(EXAMPLES / name, d / name)
    assert (d / name).read_bytes() == (EXAMPLES / name).read_bytes()
    return d


def _workers(state) -> int:
    return json.loads(run_cli("cluster", "status", "--json", state_dir=state).stdout)[
        "alive_workers"
    ]


@pytest.mark.example  # make examples; the sleep example below keeps --working-dir in make test
def test_a_wheel_example_runs_through_job_submit_working_dir(cluster, tmp_path):
    d = _example(tmp_path, "tune_basic_example.py")
    p = run_cli(
        "job", "submit", "--working-dir", d, "--", "python", "tune_basic_example.py",
        "--smoke-test", state_dir=cluster,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    # Its log, streamed as `ray job submit` streams it.
    assert "Best hyperparameters found were:" in p.stdout
    # Its end status on stderr, then where its Tune output is on the head (this machine,
    # on the local provider), read from that output.
    status, where = p.stderr.strip().splitlines()[-2:]
    assert status.endswith("SUCCEEDED"), p.stderr
    m = re.fullmatch(
        r"Tune output on the head: (\S+) \((\d+) trials: (\d+) terminated; best (\S+) .*, min\)",
        where,
    )
    assert m, where
    assert list(Path(m[1]).glob("experiment_state-*.json")), m[1]
    assert int(m[2]) == int(m[3]) > 0 and m[4] == "mean_loss"


def test_the_sleep_example_runs_as_any_script_and_uses_almost_no_cpu(cluster, tmp_path):
    """examples/sleep_search.py, the kit's own smallest Tune script: its trials sleep their
    drawn lengths, report each round, and the study reads them from Tune's output."""
    d = Path(__file__).resolve().parent.parent / "examples"
    study, _ = _study(
        cluster, tmp_path, d, "2", "python", "sleep_search.py", "--num-samples", "4",
        "--mean-s", "1", "--rounds", "2",
    )  # fmt: skip
    (run,) = study["points"][0]["runs"]
    assert run["trials_completed"] == 4 and (run["metric"], run["mode"]) == ("loss", "min")
    assert all(t["rounds"] == 2 for t in run["timeline"])
    # The trials' summed time is the drawn lengths (they sleep), mean 1 s.
    assert 2.0 < run["sum_train_s"] < 8.0, run["sum_train_s"]


def test_a_scripts_trials_give_the_live_eta_as_they_end(cluster):
    """`job submit --working-dir` follows any Tune script with the live ETA, read from
    Tune's own console lines at its default verbosity (the example's own default is quiet):
    the trials the search runs, each trial's start and end."""
    from rayscale.tune_console import TuneConsole

    d = Path(__file__).resolve().parent.parent / "examples"
    p = run_cli(
        "job", "submit", "--working-dir", d, "--", "python", "sleep_search.py",
        "--num-samples", "4", "--mean-s", "1", "--rounds", "2", "--verbose", "1",
        state_dir=cluster, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    etas = [ln.split() for ln in p.stderr.splitlines() if ln.strip().startswith("ETA ")]
    assert len(etas) == 4, p.stdout[-4000:] + p.stderr  # one as each trial ended
    assert etas[-1][1] == "0s", etas  # none left after the last
    # Tune's own lines, as the script printed them, say all of it.
    seen = TuneConsole()
    recs = [r for i, ln in enumerate(p.stdout.splitlines()) if (r := seen.feed(ln, float(i)))]
    assert seen.total == 4 and [r["done"] for r in recs] == [1, 2, 3, 4]
    assert recs[0]["total"] == 4 and recs[-1]["running_s"] == []


def _study(cluster, tmp_path, d: Path, workers: str, *command: str) -> tuple[dict, str]:
    out = tmp_path / "study"
    p = run_cli(
        "scaling", "--working-dir", d, "--workers", workers, "--out", out, "--", *command,
        state_dir=cluster, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads((out / "study.json").read_text()), p.stdout


@pytest.mark.example
def test_a_wheel_example_measured_at_1_and_2_workers_then_planned_to_64(cluster, tmp_path):
    d = _example(tmp_path, "tune_basic_example.py")
    command = ["python", "tune_basic_example.py", "--smoke-test"]
    study, stdout = _study(cluster, tmp_path, d, "1,2", *command)
    w = study["workload"]
    assert w["kind"] == "script" and w["command"] == command
    # Read from Tune's own output: its metric and mode, each point's experiment.
    assert study["metric"] == {"name": "mean_loss", "mode": "min"}
    assert all(e and "/ray_results/easy_objective_" in e for e in w["experiments"])
    assert study["baselines"] == {} and study["job_args"] == []
    assert [pt["workers"] for pt in study["points"]] == [1, 2]
    for pt in study["points"]:
        (run,) = pt["runs"]
        # 5 random draws x a grid of 2, 5 steps of 0.1 s each.
        assert run["trials"] == run["trials_completed"] == 10
        tl = run["timeline"]
        assert len(tl) == 10 and all(t["rounds"] == 5 for t in tl)
        assert all(0 <= t["start"] < t["end"] <= run["wall_s"] + 1e-6 for t in tl)
        assert all(t["end"] - t["start"] == pytest.approx(0.5, abs=0.1) for t in tl)
        assert 0 < run["wall_s"] < run["job_total_s"]
        # The example's loss, 1 / (0.1 + width * step / 100) + height / 10 with width in
        # [0, 20] and height in [-100, 100], lies in [-10, 20]; its draws are unseeded, so
        # its sign is not known (all 5 heights above about -17 leave every loss positive).
        assert run["best_metric"] == pt["best_metric"] and -10 <= run["best_metric"] <= 20
        assert run["start_uncertainty_s"] <= 0.5
        assert 0 < run["cpu_busy_avg"] <= 1.5
    # Unseeded draws: the study says the points' configs differed.
    assert w["same_configs"] is False and "ran different trial configs" in stdout
    # The cluster it found is left with the workers it had.
    assert _workers(cluster) == 2

    plan = run_cli("plan", "--study", tmp_path / "study" / "study.json", "--json")
    assert plan.returncode == 0, plan.stderr
    rows = json.loads(plan.stdout)
    assert [r["workers"] for r in rows] == [1, 2, 4, 8, 16, 32, 64]
    assert all(r["wall_s"] > 0 for r in rows)
    assert rows[-1]["wall_s"] < rows[0]["wall_s"]


@pytest.mark.example
def test_an_asha_example_stops_trials_early_and_the_study_keeps_their_length(cluster, tmp_path):
    """The wheel's AsyncHyperBand example, unchanged (grace 5, max_t 100, 0.1 s a step)."""
    d = _example(tmp_path, "async_hyperband_example.py")
    study, _ = _study(cluster, tmp_path, d, "2", "python", "async_hyperband_example.py")
    (run,) = study["points"][0]["runs"]
    assert run["trials"] == run["trials_completed"] == 20
    tl = run["timeline"]
    rounds = sorted(t["rounds"] for t in tl)
    # ASHA stopped trials at its first rung (how many depends on the order results arrive:
    # the first trials at a rung always go on); the replay keeps each one's measured length.
    assert rounds[0] == 5 and rounds[-1] <= 100 and rounds.count(5) >= 4, rounds
    for t in tl:
        assert t["end"] - t["start"] == pytest.approx(t["rounds"] * 0.1, rel=0.1, abs=0.15)
    assert study["metric"] == {"name": "mean_loss", "mode": "min"}


@pytest.mark.parametrize(
    "script,needles",
    [
        ("import sys\nsys.exit(3)\n", ["ended FAILED", "rayscale job logs"]),
        ("print('no search here')\n", ["wrote no Tune experiment", "--experiment-path"]),
    ],
)
def test_bad_scripts_are_one_line_errors_and_leave_the_cluster_as_it_was(
    cluster, tmp_path, script, needles
):
    (tmp_path / "bad.py").write_text(script)
    out = tmp_path / "study"
    p = run_cli(
        "scaling", "--working-dir", tmp_path, "--workers", "1", "--out", out, "--",
        "python", "bad.py", state_dir=cluster, timeout=300,
    )  # fmt: skip
    assert_one_line_error(p, *needles)
    assert _workers(cluster) == 2
    assert not (out / "study.json").exists()


@pytest.mark.parametrize(
    "args,needle", [(["--baselines", "joblib"], "drop --baselines"), ([], "no command to measure")]
)
def test_scaling_working_dir_bad_input(tmp_path, args, needle):
    p = run_cli("scaling", "--working-dir", tmp_path, *args, state_dir=tmp_path / "s")
    assert_one_line_error(p, needle)
    assert not (tmp_path / "s" / "cluster.json").exists()


def test_a_cluster_without_auth_takes_jobs_with_a_warning(tmp_path):
    """`ray start --head` with Ray's defaults (token auth off): submitted to without a
    token, with one warning line that the cluster has no auth."""
    port, dash, agent, client, metrics = procs.free_ports(5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Short: Ray's unix sockets live under it, and their paths are capped at 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="rs-noauth-", dir="/tmp"))
    # A fresh machine's home: Ray turns token auth on by itself where ~/.ray/auth_token
    # exists, which any earlier local ray.init() on this machine writes.
    env["HOME"] = str(temp)
    ray = str(Path(sys.executable).parent / "ray")
    start = [ray, "start", "--head", f"--port={port}", f"--dashboard-port={dash}"]
    start += [f"--temp-dir={temp}", "--num-cpus=1", "--include-dashboard=true"]
    start += [f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}"]
    start += [f"--metrics-export-port={metrics}"]
    started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        p = run_cli(
            "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--json",
            "--", *TINY, "--num-samples", 1, "--scheduler", "fifo",
            env={"RAY_AUTH_TOKEN": "", "HOME": str(temp)}, timeout=300,
        )  # fmt: skip
        assert p.returncode == 0, p.stdout + p.stderr
        warnings = [x for x in p.stderr.splitlines() if x.startswith("warning:")]
        assert len(warnings) == 1 and "asks for no token" in warnings[0]
        assert json.loads(p.stdout)["trials_completed"] == 1
    finally:
        pids = [int(x.read_text()) for x in temp.glob("session_latest/logs/*.pid") if x.is_file()]
        _stop_ray(temp, pids)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_ray(temp: Path, pids: list[int]) -> None:
    """Stop the processes of the cluster under TEMP, by their PIDs (never by name)."""
    import psutil

    mine = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(str(temp) in (c or "") for c in (p.info["cmdline"] or []))
    ]
    mine += [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)]
    for p in mine:
        for c in [p, *p.children(recursive=True)]:
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass
    psutil.wait_procs(mine, timeout=20)
