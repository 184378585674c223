"""`rayscale scaling` for real on 1,2 local workers with tiny data: files, fields, fit, plot."""

from __future__ import annotations

import csv
import glob
import json
import os
import signal
import subprocess
import time

import pytest
from conftest import RAYSCALE, ROOT, TINY, assert_all_gone, recorded_pids, run_cli, tree_pids

from rayscale import predict

pytestmark = pytest.mark.cluster


def _terminate_after_first_run(out, state, tmpdir) -> str:
    """Start a 1,2-worker study, SIGTERM it once its first run is saved; check that the
    cluster it brought up is gone. Returns the saved run's job id."""
    env = {**os.environ, "RAYSCALE_STATE_DIR": str(state), "TMPDIR": str(tmpdir)}
    env.pop("RAY_ADDRESS", None)
    args = ["scaling", "--workers", "1,2", "--memory-per-worker", "1", "--out", str(out)]
    proc = subprocess.Popen(
        [RAYSCALE, *args, "--", *map(str, TINY), "--num-samples", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            progress = out / "progress.json"
            if progress.exists() and json.loads(progress.read_text())["runs"]:
                break
            time.sleep(0.2)
        pids, rec = recorded_pids(state)
        pids = tree_pids(pids)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 143, stdout + stderr
    assert stderr.strip().splitlines()[-1] == "rayscale: error: terminated"
    assert f"--resume {out}" in stdout
    # It brought the cluster up itself, so it took it down, even when terminated.
    assert not (state / "cluster.json").exists()
    assert_all_gone(pids, rec["temp_root"])
    assert not list(tmpdir.glob("rayscale-*")), "temp dirs left behind"
    (saved,) = json.loads((out / "progress.json").read_text())["runs"]
    assert saved["workers"] == 1 and saved["trials_completed"] == 4
    assert not (out / "study.json").exists()
    return saved["job_id"]


def test_scaling_study_terminated_then_resumed_on_one_and_two_workers(tmp_path, own_tmpdir):
    out = tmp_path / "study"
    state = tmp_path / "state"
    first_job = _terminate_after_first_run(out, state, own_tmpdir)
    p = run_cli("scaling", "--resume", out, state_dir=state, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "resuming: 1 runs done, 1 to run" in p.stdout
    study = json.loads((out / "study.json").read_text())
    # The resumed study is what an uninterrupted one writes, the finished run kept as it was.
    assert study["points"][0]["runs"][0]["job_id"] == first_job
    assert study["provider"] == "local"
    assert "--scheduler" in study["job_args"] and "fifo" in study["job_args"]
    assert set(study["machine"]) >= {"cpus", "memory_gib", "hostname"}
    assert [pt["workers"] for pt in study["points"]] == [1, 2]
    assert [pt["cpus"] for pt in study["points"]] == [1, 2]
    for pt in study["points"]:
        assert set(pt) >= {
            "workers",
            "cpus",
            "runs",
            "wall_s_median",
            "speedup",
            "efficiency",
            "overhead_per_trial_s",
        }
        (run,) = pt["runs"]
        assert set(run) >= {
            "wall_s",
            "sum_train_s",
            "trials_completed",
            "best_metric",
            "cpu_busy_avg",
        }
        assert run["trials_completed"] == 4 and run["wall_s"] > 0
        # Trials ran in at most one process per slot (reuse_actors).
        assert 1 <= run["trial_processes"] <= pt["workers"]
        assert 0 < run["cpu_busy_avg"] <= 1.5  # utilisation was really sampled
    assert study["points"][0]["speedup"] == 1.0 and study["points"][0]["efficiency"] == 1.0
    # Same configs at every point and in the baselines: the same best model is found.
    best = {pt["runs"][0]["best_metric"] for pt in study["points"]}
    best.add(study["baselines"]["sequential"]["best_metric"])
    best.add(study["baselines"]["joblib"]["best_metric"])
    assert max(best) - min(best) < 1e-9
    # Each run was read from its Tune output on the head, its record lying beside it.
    wl = study["workload"]
    assert wl["kind"] == "bundled" and wl["same_configs"] is True
    for pt, path in zip(study["points"], wl["experiments"], strict=True):
        assert path == pt["runs"][0]["experiment"]
        assert glob.glob(f"{path}/experiment_state-*.json")
        rec = json.loads(open(f"{path}/rayscale-result.json").read())
        assert rec["best_valid_rmse"] == pt["runs"][0]["best_metric"]
        assert (pt["runs"][0]["metric"], pt["runs"][0]["mode"]) == ("rmse", "min")
    assert study["baselines"]["joblib"]["n_jobs"] >= 1
    # As often as each point was run (once here), each run's times kept beside the median.
    assert [len(b["runs"]) for b in study["baselines"].values()] == [1, 1]
    seq = study["baselines"]["sequential"]
    assert seq["runs"][0]["wall_s"] == pytest.approx(seq["wall_s"], abs=1e-3)
    # The trials' CPU clocks, summed, in the points' runs and the baselines' (the bench's
    # trial_clocks); no more CPU than wall time, give or take the two clocks' ticks.
    for r in [*(r for q in study["points"] for r in q["runs"]), seq, study["baselines"]["joblib"]]:
        assert 0 < r["sum_train_cpu_s"] <= r["sum_train_s"] * 1.05 + 0.05
    # Two worker counts: no law is fitted; the replay model predicts each point from the other.
    assert study["fit"]["amdahl_serial_fraction"] is None and "need 3" in study["fit"]["note"]
    pred = study["prediction"]
    assert pred["method"] == "replay" and [v["workers"] for v in pred["validation"]] == [1, 2]
    assert all(v["predicted_wall_s"] > 0 for v in pred["validation"])
    assert [q["workers"] for q in pred["points"]][-1] == 64
    # The host's contention comes from the baselines: joblib's trials at once vs the loop's.
    factors = dict(pred["host_contention"])
    seq, par = study["baselines"]["sequential"], study["baselines"]["joblib"]
    if par["n_jobs"] > 1:
        assert factors[par["n_jobs"]] == pytest.approx(par["sum_train_s"] / seq["sum_train_s"])
    run = study["points"][0]["runs"][0]
    assert len(run["timeline"]) == 4 and all(t["end"] > t["start"] >= 0 for t in run["timeline"])
    # Each trial's notes at the rungs and its end travel with it, for the replay of ASHA.
    assert all(t["marks"][-1][0] == t["rounds"] for t in run["timeline"])
    # And its config, which a larger search's cost model is fitted on; 4 configs are too few.
    assert all(t["config"]["num_boost_round"] == t["total_rounds"] for t in run["timeline"])
    assert pred["cost_model"] is None
    rows = list(csv.DictReader(open(out / "points.csv")))
    assert [int(r["workers"]) for r in rows] == [1, 2]
    png = (out / "scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    # It brought the cluster up itself, so it took it down again.
    assert not (state / "cluster.json").exists()


def test_scaling_uses_a_running_cluster_and_leaves_it_up(cluster, tmp_path):
    before = tree_pids([json.loads((cluster / "cluster.json").read_text())["head"]["proc"]])
    # With an adaptive search, which the study runs unchanged and says what that means.
    p = run_cli(
        "scaling",
        "--workers",
        "2",
        "--baselines",
        "none",
        "--out",
        tmp_path,
        "--",
        *TINY,
        "--num-samples",
        2,
        "--search-alg",
        "optuna",
        state_dir=cluster,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "using the local cluster" in p.stdout
    assert "note: --search-alg optuna is adaptive" in p.stdout
    assert "note: FIFO, the study's default scheduler" in p.stdout  # no --scheduler given
    study = json.loads((tmp_path / "study.json").read_text())
    assert "each point trains its own configs" in study["search_note"]
    assert study["points"][0]["best_metric"] > 0
    assert study["metric"] == {"name": "valid RMSE", "mode": "min"}
    # No joblib baseline asked for: the study still measures trials at once on this machine
    # on its first configs (2 here, as many as the search has), which the replay model uses.
    cal = study["calibration"]
    assert cal["configs"] == 2 and cal["joblib"]["n_jobs"] == 2 and cal["sequential"]["runs"]
    assert "calibration (no joblib baseline asked for): 2 configs, 2 at once" in p.stdout
    assert predict.host_of(study).factors[1][0] == 2
    st = json.loads(run_cli("cluster", "status", "--json", state_dir=cluster).stdout)
    assert st["alive_workers"] == 2
    assert (
        before
        <= tree_pids([json.loads((cluster / "cluster.json").read_text())["head"]["proc"]]) | before
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--workers", "1,1"], "repeats a count"),
        (["--workers", "0,2"], "at least 1"),
        (["--baselines", "dask"], "unknown baseline 'dask'"),
        (["--resume", "nowhere"], "no study to resume in nowhere"),
        (["--resume", "nowhere", "--workers", "1,3"], "drop --workers"),
        (["--workers", "2", "--", "--mode", "tune"], "--mode is set by the scaling study"),
    ],
)
def test_scaling_bad_input(tmp_path, args, needle):
    from conftest import assert_one_line_error

    p = run_cli("scaling", *args, state_dir=tmp_path / "s")
    assert_one_line_error(p, needle)
    assert not (tmp_path / "s" / "cluster.json").exists()
