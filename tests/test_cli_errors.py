"""Bad input to the CLI: one line naming the problem and the fix, exit != 0, no traceback."""

from __future__ import annotations

import pytest
from conftest import assert_one_line_error, run_cli


@pytest.mark.parametrize(
    "args,needles",
    [
        (["cluster", "up", "--workers", "0"], ["--workers", "at least 1"]),
        (["cluster", "up", "--workers", "-1"], ["--workers", "at least 1"]),
        (["cluster", "up", "--workers", "abc"], ["--workers", "not a whole number"]),
        (
            ["cluster", "up", "--workers", "2", "--provider", "nope"],
            ["'nope' is not one of", "'local'"],
        ),
        (
            ["cluster", "up", "--workers", "500", "--memory-per-worker", "64"],
            ["available", "fewer --workers"],
        ),
        (["cluster", "up", "--cpus-per-worker", "0"], ["--cpus-per-worker"]),
        (["cluster", "scale", "--workers", "2"], ["no cluster is recorded", "cluster up"]),
        (["cluster", "status"], ["no cluster is recorded", "`rayscale cluster list`"]),
        (["cluster", "up", "--cluster", "Big_1"], ["--cluster", "lowercase letters", "gpu-2"]),
        (["job", "submit", "--address", "http://127.0.0.1:9", "--"], ["cannot reach", "--address"]),
        (["job", "submit", "--address", "ftp://x", "--"], ["bad address"]),
        (["job", "status", "x", "--address", "http://127.0.0.1:9"], ["cannot reach"]),
        (["job", "submit", "--"], ["no cluster is recorded"]),
        (["job", "submit", "--rayjob", "--"], ["no cluster is recorded"]),
        (
            ["job", "submit", "--rayjob", "--address", "http://127.0.0.1:9", "--"],
            ["--rayjob runs the image's bundled job", "drop --working-dir"],
        ),
        # `ray job submit`'s flags, checked as Ray checks them, before any cluster is reached
        (["job", "submit", "--metadata-json", "{team: ml}", "--"], ["--metadata-json is not JSON"]),
        (["job", "submit", "--metadata-json", '{"n": 1}', "--"], ["not a string"]),
        (
            ["job", "submit", "--runtime-env", "nope.yaml", "--runtime-env-json", "{}", "--"],
            ["--runtime-env and --runtime-env-json both given", "pass one"],
        ),
        (["job", "submit", "--runtime-env", "no-such.yaml", "--"], ["--runtime-env no-such.yaml"]),
        (["job", "submit", "--runtime-env-json", "[1]", "--"], ["not a JSON object"]),
        (
            ["job", "submit", "--entrypoint-resources", '{"disk": "big"}', "--"],
            ["--entrypoint-resources", "not a number"],
        ),
        (
            ["job", "submit", "--rayjob", "--submission-id", "x", "--"],
            ["--rayjob runs the image's bundled job", "--submission-id"],
        ),
        (["job", "delete", "x", "--address", "http://127.0.0.1:9"], ["cannot reach"]),
        (["cluster", "frobnicate"], ["no such command"]),
        # An option the chosen provider would ignore is refused, naming the providers it is for.
        (
            ["cluster", "up", "--provider", "kuberay", "--cpus-per-worker", "4"],
            ["--cpus-per-worker does not apply to the kuberay provider", "local, docker"],
        ),
        (
            ["cluster", "up", "--image", "x:1"],
            ["--image does not apply to the local provider", "docker, kuberay, kind"],
        ),
        (
            ["scaling", "--provider", "docker", "--config", "cluster/aws.yaml"],
            ["--config does not apply", "ray-up"],
        ),
    ],
)
def test_bad_cli_input(tmp_path, args, needles):
    p = run_cli(*args, state_dir=tmp_path / "state")
    assert_one_line_error(p, *needles)
    # Nothing half-done: no cluster record, no token.
    assert not (tmp_path / "state" / "cluster.json").exists()
    assert not (tmp_path / "state" / "auth_token").exists()


def test_job_dir_over_the_working_dir_limit_is_refused(tmp_path):
    """Ray refuses working_dirs over its gRPC message limit; rayscale says so first, clearly.

    The limit is lowered for this process (RAY_max_grpc_message_size, which Ray reads) so
    the test needs a 3 MiB file, not a 500 MiB one.
    """
    import shutil

    from conftest import ROOT

    job = tmp_path / "job"
    shutil.copytree(ROOT / "job", job, ignore=shutil.ignore_patterns("__pycache__"))
    (job / "weights.bin").write_bytes(b"\0" * (3 * 2**20))
    (job / "ignored.csv").write_bytes(b"\0" * (8 * 2**20))  # data files are never shipped
    p = run_cli(
        "job",
        "submit",
        "--job-dir",
        job,
        "--address",
        "http://127.0.0.1:9",
        "--",
        env={"RAY_max_grpc_message_size": str(2 * 2**20)},
    )
    assert_one_line_error(p, "working_dir limit of 2 MiB", "move large files out")


def test_job_dir_without_the_job_is_refused(tmp_path):
    p = run_cli("job", "submit", "--job-dir", tmp_path, "--address", "http://127.0.0.1:9", "--")
    assert_one_line_error(p, "no tune_xgboost.py", "--job-dir")


# ---- a base install: the extras it lacks are named, never an ImportError --------------------

JOB = ["xgboost", "sklearn", "pandas", "pyarrow", "optuna"]
STUDY = ["numpy", "scipy", "matplotlib"]
K8S = ["kubernetes"]


def _without(tmp_path, modules: list[str]) -> dict[str, str]:
    """Env for a CLI run in which MODULES cannot be imported, as in a venv without them."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor m in {modules!r}:\n    sys.modules[m] = None\n"
    )
    return {"PYTHONPATH": str(site)}


@pytest.mark.parametrize(
    "args,missing,needles",
    [
        (["cluster", "up", "--workers", "1"], JOB, ["local provider", "rayscale[job]"]),
        (
            ["cluster", "up", "--provider", "kuberay", "--workers", "1"],
            K8S,
            ["kuberay provider needs kubernetes", "rayscale[k8s]"],
        ),
        (
            ["scaling", "--workers", "1", "--baselines", "none"],
            STUDY,
            ["rayscale scaling needs numpy, scipy, matplotlib", "rayscale[study]"],
        ),
        (["scaling", "--workers", "1"], JOB, ["baselines", "rayscale[job]"]),
    ],
)
def test_a_missing_extra_is_named(tmp_path, args, missing, needles):
    p = run_cli(*args, state_dir=tmp_path / "state", env=_without(tmp_path, missing))
    assert_one_line_error(p, *needles)
    assert not (tmp_path / "state" / "cluster.json").exists()


def test_submitting_needs_no_extra(tmp_path):
    """Only the base install: the CLI reaches the point of connecting to the cluster."""
    env = _without(tmp_path, JOB + STUDY + K8S + ["mlflow"])
    assert run_cli("--help", env=env).returncode == 0
    p = run_cli("job", "submit", "--address", "http://127.0.0.1:9", "--", env=env)
    assert_one_line_error(p, "cannot reach", "--address")
    p = run_cli("job", "list", "--address", "http://127.0.0.1:9", env=env)
    assert_one_line_error(p, "cannot reach")


def test_cluster_commands_suggest_only_options_they_take(tmp_path):
    """`cluster status` takes no --address, so its fix does not name it; `job` commands do."""
    said = assert_one_line_error(
        run_cli("cluster", "status", state_dir=tmp_path), "no cluster is recorded", "cluster up"
    )
    assert "--address" not in said
    assert_one_line_error(run_cli("job", "list", state_dir=tmp_path), "--address")
