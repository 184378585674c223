"""Job Submission against the real local cluster: the tuning job end to end, auth, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import (
    DATASETS,
    ROOT,
    TINY,
    assert_one_line_error,
    mlflow_server,
    needs_datasets,
    run_cli,
)

from rayscale import jobs
from rayscale.state import StateDir

pytestmark = pytest.mark.cluster


def submit(state, *job_args, extra=(), env=None):
    return run_cli("job", "submit", "--json", *extra, "--", *job_args, state_dir=state, env=env)


def test_tuning_job_end_to_end(cluster, results_dir):
    p = submit(
        cluster,
        *TINY,
        "--num-samples",
        4,
        "--scheduler",
        "fifo",
        "--storage-path",
        results_dir,
        "--name",
        "e2e",
    )
    assert p.returncode == 0, p.stderr
    # Following streams the log; Ray's own INFO lines about the stream stay out of it.
    assert "INFO" not in p.stderr, p.stderr
    rec = json.loads(p.stdout)
    assert rec["mode"] == "tune" and rec["num_samples"] == 4
    assert rec["trials_completed"] == 4 and rec["trials_errored"] == 0
    assert rec["rows"] == 600 and rec["features"] == 6
    assert len(rec["trials"]) == 4
    assert rec["sum_train_cpu_s"] == pytest.approx(
        sum(t["train_cpu_s"] for t in rec["trials"]), abs=1e-2
    )
    for t in rec["trials"]:
        assert t["rounds"] == t["config"]["num_boost_round"] <= 20
        assert t["train_s"] > 0 and t["rmse"] > 0 and t["node_id"]
        # Its thread's CPU while training: the wall time less any wait for a core (the
        # bench's trial clocks); a little over it where the two clocks tick apart.
        assert 0 < t["train_cpu_s"] <= t["train_s"] * 1.05 + 0.01
        # The trial process loaded XGBoost without scikit-learn / scipy.stats (issue 13).
        assert t["heavy_imports"] == []
        # Even under FIFO each trial noted its RMSE and time at ASHA's rungs (grace 5,
        # rf 3 for 20 rounds: 5 and 15) and at its end, for the replay of ASHA (issue 12).
        rounds = [m[0] for m in t["marks"]]
        assert rounds == [r for r in (5, 15) if r < t["rounds"]] + [t["rounds"]]
        assert t["marks"][-1][1] == pytest.approx(t["rmse"], rel=1e-5)
        times = [m[2] for m in t["marks"]]
        assert times == sorted(times) and times[0] > 0
    # The trace of a search's first seconds: Tune's controller, then each trial's actor
    # ready, then its trainable entered (docs/benchmarks.md).
    start, end = rec["search_window"]
    for t in rec["trials"]:
        entered = t["started_at"] - t["setup_s"]
        assert start <= rec["controller_started_at"] <= t["actor_ready_at"] <= entered <= end
    # Trials ran on the worker nodes, never the head (num-cpus 0).
    assert rec["cluster"] == {"nodes": 3, "cpus": 2.0, "worker_nodes": 2}
    assert rec["best_config"] == min(rec["trials"], key=lambda t: t["rmse"])["config"]
    for k in ("baseline", "tuned"):
        assert set(rec[k]) >= {"rmse", "mae", "r2"} and rec[k]["rmse"] > 0
    assert rec["versions"]["ray"] == "2.60.0"
    # The launcher saves the record under results/ in the current directory by default and
    # says where (conftest points RAYSCALE_RESULTS_DIR at a temp dir).
    saved = Path(os.environ["RAYSCALE_RESULTS_DIR"]) / "e2e.json"
    assert json.loads(saved.read_text()) == rec and f"saved to {saved}" in p.stderr
    # The same record is written under the storage path.
    stored = json.loads((results_dir / "e2e" / "rayscale-result.json").read_text())
    assert stored["trials"] == rec["trials"]


def test_a_trial_checkpoints_only_once_it_has_trained_checkpoint_min_s(cluster, results_dir):
    """A checkpoint is a round trip through Tune's driver and a copy to the storage path: a
    trial writes one at a --checkpoint-every round only once it has trained
    --checkpoint-min-s (10 s by default) since its last. Trials of well under a second
    write none by default, and one at each of their rounds 5, 10, 15 with 0."""

    def checkpoints(name, *extra):
        p = submit(
            cluster, *TINY, "--num-samples", 2, "--scheduler", "fifo", "--checkpoint-every", 5,
            "--storage-path", results_dir, "--name", name, *extra,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        rec = json.loads(p.stdout)
        assert rec["trials_completed"] == 2
        return rec, sorted(
            c.name for c in (results_dir / name).glob("*/checkpoint_*") if c.is_dir()
        )

    rec, found = checkpoints("ckpt-default")
    assert found == [] and max(t["train_s"] for t in rec["trials"]) < 10
    rec, found = checkpoints("ckpt-always", "--checkpoint-min-s", 0)
    assert len(found) == sum(
        len([r for r in (5, 10, 15) if r < t["rounds"]]) for t in rec["trials"]
    )
    assert found


@needs_datasets
def test_real_data_with_categorical_columns(cluster, results_dir):
    p = submit(
        cluster,
        "--data",
        DATASETS / "insurance.csv",
        "--target",
        "charges",
        "--num-samples",
        3,
        "--max-rounds",
        30,
        "--mode",
        "both",
        "--storage-path",
        results_dir,
    )
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["rows"] == 1338 and rec["features"] == 6
    assert sorted(rec["categorical"]) == ["region", "sex", "smoker"]
    # Medical charges are learnable: R² well above zero for both models.
    assert rec["baseline"]["r2"] > 0.7 and rec["tuned"]["r2"] > 0.7
    assert set(rec["modes"]) == {"tune", "sequential"}
    # Categorical columns train in trial processes that never loaded scikit-learn.
    assert all(t["heavy_imports"] == [] for t in rec["trials"])
    assert rec["speedup_vs_sequential"] > 0


def test_submit_without_token_is_refused_clearly(cluster):
    url = json.loads(run_cli("cluster", "status", "--json", state_dir=cluster).stdout)[
        "dashboard_url"
    ]
    p = run_cli("job", "submit", "--address", url, "--", *TINY, env={"RAY_AUTH_TOKEN": ""})
    assert_one_line_error(p, "requires a token", "--token-file")


def test_submit_with_wrong_token_is_refused_clearly(cluster, tmp_path):
    url = json.loads(run_cli("cluster", "status", "--json", state_dir=cluster).stdout)[
        "dashboard_url"
    ]
    bad = tmp_path / "token"
    bad.write_text("not-the-token")
    p = run_cli("job", "submit", "--address", url, "--token-file", bad, "--", *TINY)
    assert_one_line_error(p, "rejected the token", "--token-file")


def test_address_and_token_file_reach_the_cluster(cluster):
    """--address + --token-file: how a user reaches any cluster, e.g. one in the cloud."""
    url = json.loads(run_cli("cluster", "status", "--json", state_dir=cluster).stdout)[
        "dashboard_url"
    ]
    p = run_cli("job", "list", "--json", "--address", url, "--token-file", cluster / "auth_token")
    assert p.returncode == 0, p.stderr
    assert isinstance(json.loads(p.stdout), list)


def test_job_goes_by_path_where_the_nodes_share_the_disk_and_is_uploaded_otherwise(
    cluster, results_dir
):
    """The local provider's nodes read this machine's files: the job is submitted as a path
    with no runtime env (each worker process Ray starts under one costs ~0.7 s more here), and
    its trials get the training code by value. Through --address (any cluster) the job
    goes as an uploaded working_dir. Both run the same search."""
    from dataclasses import replace

    from rayscale import providers

    local = providers.recorded(StateDir(cluster)).endpoint()
    assert local.shares_disk
    args = [*TINY, "--num-samples", 2, "--storage-path", results_dir]
    args = [str(a) for a in args]
    for ep, by_path in ((local, True), (replace(local, shares_disk=False), False)):
        j = jobs.Jobs(ep)
        job_id = j.submit(args)
        rec = j.result(job_id, j.wait(job_id, timeout=300))
        info = j._client.get_job_info(job_id)
        if by_path:
            assert not info.runtime_env
            assert info.entrypoint.startswith(f"cd {ROOT / 'job'} && python tune_xgboost.py ")
        else:
            assert info.runtime_env["working_dir"].startswith("gcs://_ray_pkg_")
            assert info.entrypoint.startswith("python tune_xgboost.py ")
        assert rec["trials_completed"] == 2
        assert all(t["heavy_imports"] == [] for t in rec["trials"])


@pytest.mark.parametrize(
    "job_args,needles",
    [
        # The job's own refusal, relayed (every other data error: test_job_inputs.py).
        (["--data", "/nonexistent/data.csv"], ["not found"]),
        # More than any worker has (1 CPU, 1.5 GiB each): refused, not waited for forever.
        (
            [*TINY, "--cpus-per-trial", "2", "--memory-per-trial", "64"],
            ["asks for 2 CPUs and 64 GiB", "biggest worker has 1 CPUs", "--cpus-per-trial"],
        ),
    ],
)
def test_bad_job_input_through_the_cluster(cluster, job_args, needles):
    p = submit(cluster, *job_args)
    assert_one_line_error(p, *needles)


def test_no_wait_then_status_logs_and_list(cluster):
    p = run_cli(
        "job", "submit", "--no-wait", "--", *TINY, "--num-samples", 2, state_dir=cluster, check=True
    )
    job_id = p.stdout.strip()
    assert job_id.startswith("raysubmit_")
    # (a running search's status goes on with its trials and ETA once one has ended)
    assert run_cli("job", "status", job_id, state_dir=cluster).stdout.split()[0] in {
        "PENDING",
        "RUNNING",
        "SUCCEEDED",
    }
    # As `ray job logs -f`: the whole log, streamed until the job ends, then its status; the
    # ETA after each finished trial, the last one's nothing left.
    followed = run_cli("job", "logs", "--follow", job_id, state_dir=cluster, check=True)
    assert "RAYSCALE_RESULT" in followed.stdout, followed.stdout[-2000:]
    assert followed.stderr.strip().endswith(f"{job_id} SUCCEEDED"), followed.stderr
    etas = [ln.strip() for ln in followed.stderr.splitlines() if ln.strip().startswith("ETA ")]
    assert len(etas) == 2 and etas[-1] == "ETA 0s (0s-0s)", followed.stderr
    ended = json.loads(run_cli("job", "status", "--json", job_id, state_dir=cluster).stdout)
    assert ended == {"job_id": job_id, "status": "SUCCEEDED", "eta": None}
    listed = json.loads(run_cli("job", "list", "--json", state_dir=cluster, check=True).stdout)
    assert job_id in [j["submission_id"] for j in listed]
    assert_one_line_error(run_cli("job", "status", "raysubmit_nope", state_dir=cluster), "nope")


def test_ray_job_submits_flags_carry_over_and_an_ended_job_is_deleted(cluster, tmp_path):
    """`ray job submit`'s flags, by Ray's names, reach the Job API as Ray's CLI sends them
    (the runtime env merged with --env, which wins); a used submission ID is one line; `job
    delete` removes the ended job, `-c` names the cluster."""
    (tmp_path / "show.py").write_text(
        "import os; print('X=%s Y=%s' % (os.environ['X'], os.environ['Y']))\n"
    )
    (tmp_path / "env.yaml").write_text("env_vars: {X: from-yaml, Y: from-yaml}\n")
    sid = f"rayscale-flags-{os.getpid()}"
    flags = ["--working-dir", tmp_path, "--runtime-env", tmp_path / "env.yaml", "--env", "Y=from-env",
             "--submission-id", sid, "--metadata-json", '{"team": "ml"}',
             "--entrypoint-memory", "100000000",
             # the driver kept on the head: the local provider's nodes share one address,
             # and Ray's Job API then reads a worker-placed driver's log from the head's
             "--entrypoint-resources", '{"node:__internal_head__": 0.01}']  # fmt: skip
    p = run_cli("job", "submit", *flags, "--", "python", "show.py", state_dir=cluster)
    assert p.returncode == 0, p.stderr
    assert "X=from-yaml Y=from-env" in p.stdout, p.stdout
    client = jobs.Jobs(providers_endpoint(cluster))._client
    info = client.get_job_info(sid)
    assert info.metadata["team"] == "ml" and info.status == "SUCCEEDED"
    nodes = json.loads(run_cli("cluster", "status", "--json", state_dir=cluster).stdout)["nodes"]
    head = next(n["node_id"] for n in nodes if n["role"] == "head")
    assert info.driver_node_id == head  # where --entrypoint-resources asked
    # A CPU for the driver: the head has none, so a worker runs it.
    away = run_cli("job", "submit", "--no-wait", "--entrypoint-num-cpus", "1", "--working-dir",
                   tmp_path, "--", "python", "-c", "pass", state_dir=cluster, check=True)  # fmt: skip
    job_id = away.stdout.strip()
    assert run_cli("job", "logs", "--follow", job_id, state_dir=cluster).returncode == 0
    assert client.get_job_info(job_id).driver_node_id not in (None, head)
    again = run_cli("job", "submit", *flags, "--", "python", "show.py", state_dir=cluster)
    assert_one_line_error(again, sid, "already exists", "another --submission-id")
    deleted = run_cli("job", "delete", sid, "-c", "default", state_dir=cluster, check=True)
    assert deleted.stdout.strip() == f"{sid}: deleted"
    listed = json.loads(run_cli("job", "list", "--json", state_dir=cluster, check=True).stdout)
    assert sid not in [j["submission_id"] for j in listed]
    assert_one_line_error(run_cli("job", "delete", sid, state_dir=cluster), sid, "job list")


def providers_endpoint(state):
    from rayscale import providers

    return providers.recorded(StateDir(state)).endpoint()


def test_a_search_whose_every_trial_fails_ends_non_zero(cluster, tmp_path):
    """XGBoost refuses subsample 1.5 in every trial: the job and `job submit` end non-zero
    with one line quoting the first trial's error, and the record says so."""
    import shutil

    job_dir = tmp_path / "job"
    shutil.copytree(ROOT / "job", job_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (job_dir / "bad_space.yaml").write_text(
        "subsample: {choice: [1.5]}\nmax_depth: {randint: [2, 3]}\n"
    )
    p = run_cli(
        "job",
        "submit",
        "--job-dir",
        job_dir,
        "--",
        *TINY,
        "--num-samples",
        2,
        "--scheduler",
        "fifo",
        "--search-space",
        "bad_space.yaml",
        "--max-failures",
        0,
        "--storage-path",
        tmp_path / "r",
        "--name",
        "doomed",
        state_dir=cluster,
        timeout=300,
    )
    assert_one_line_error(p, "failed: every trial failed (2 of 2); the first:", "subsample")
    rec = json.loads((tmp_path / "r" / "doomed" / "rayscale-result.json").read_text())
    assert (
        rec["status"] == "failed" and rec["trials_completed"] == 0 and "subsample" in rec["error"]
    )


def test_optuna_search_and_its_plain_optuna_baseline(cluster, tmp_path):
    """--search-alg optuna: TPE through Tune's OptunaSearch with ASHA on the cluster, and
    plain Optuna on one machine (the baseline) with the same budget."""
    p = submit(
        cluster,
        *TINY,
        "--num-samples",
        6,
        "--search-alg",
        "optuna",
        "--scheduler",
        "asha",
        "--mode",
        "both",
        "--storage-path",
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["search_alg"] == "optuna" and set(rec["modes"]) == {"tune", "sequential"}
    assert rec["trials_completed"] == 6 and rec["modes"]["sequential"]["trials_completed"] == 6
    cfgs = [t["config"] for t in rec["trials"]]
    assert len({json.dumps(c, sort_keys=True) for c in cfgs}) == 6, "each trial its own config"
    assert all(isinstance(c["max_depth"], int) and 1 <= c["num_boost_round"] <= 20 for c in cfgs)
    assert rec["best_config"] in cfgs and rec["tuned"]["rmse"] > 0


def test_mlflow_tracks_every_trial_and_the_outcome(cluster, tmp_path):
    """--mlflow against a real MLflow tracking server (SQLite backend): a run per trial with
    its config, its RMSE at each reported round and the node it ran on, and a summary run
    with the baseline and tuned test scores."""
    from mlflow.tracking import MlflowClient

    with mlflow_server(tmp_path) as uri:
        p = submit(
            cluster,
            *TINY,
            "--num-samples",
            3,
            "--scheduler",
            "fifo",
            "--report-every",
            5,
            "--mlflow",
            uri,
            "--mlflow-experiment",
            "xgb",
            "--name",
            "tracked",
            "--storage-path",
            tmp_path / "r",
        )
        assert p.returncode == 0, p.stderr
        rec = json.loads(p.stdout)
        assert "mlflow" in rec["driver_heavy_imports"]
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("xgb")
        assert rec["mlflow"] == {
            "uri": uri,
            "experiment": "xgb",
            "experiment_id": exp.experiment_id,
            "summary_run_id": rec["mlflow"]["summary_run_id"],
        }
        runs = client.search_runs(
            [exp.experiment_id], filter_string="tags.`rayscale.search` = 'tracked'"
        )
        trials = {
            r.data.tags["trial_id"]: r for r in runs if r.data.tags["rayscale.kind"] == "trial"
        }
        (summary,) = [r for r in runs if r.data.tags["rayscale.kind"] == "summary"]
        assert set(trials) == {t["trial_id"] for t in rec["trials"]}
        for t in rec["trials"]:
            run = trials[t["trial_id"]]
            assert run.info.status == "FINISHED"
            assert run.data.tags["node_id"] == t["node_id"]
            assert int(run.data.params["num_boost_round"]) == t["config"]["num_boost_round"]
            rmse = client.get_metric_history(run.info.run_id, "rmse")
            steps = [m.step for m in rmse]
            assert steps == sorted(steps) and steps[-1] == t["rounds"]
            assert all(s % 5 == 0 for s in steps[:-1]), steps
            assert rmse[-1].value == pytest.approx(t["rmse"])
            assert client.get_metric_history(run.info.run_id, "train_s")[-1].value == pytest.approx(
                t["train_s"], abs=1e-3
            )
        assert (
            summary.info.run_id == rec["mlflow"]["summary_run_id"]
            and summary.info.status == "FINISHED"
        )
        for model in ("baseline", "tuned"):
            for k in ("rmse", "r2"):
                assert summary.data.metrics[f"{model}_{k}"] == pytest.approx(rec[model][k])
        assert (
            int(summary.data.params["best.num_boost_round"])
            == rec["best_config"]["num_boost_round"]
        )
