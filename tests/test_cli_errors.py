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
            ["unknown provider 'nope'", "local"],
        ),
        (
            ["cluster", "up", "--workers", "500", "--memory-per-worker", "64"],
            ["available", "fewer --workers"],
        ),
        (["cluster", "up", "--cpus-per-worker", "0"], ["--cpus-per-worker"]),
        (["cluster", "scale", "--workers", "2"], ["no cluster is recorded", "cluster up"]),
        (["cluster", "status"], ["no cluster is recorded"]),
        (["job", "submit", "--address", "http://127.0.0.1:9", "--"], ["cannot reach", "--address"]),
        (["job", "submit", "--address", "ftp://x", "--"], ["bad address"]),
        (["job", "status", "x", "--address", "http://127.0.0.1:9"], ["cannot reach"]),
        (["job", "submit", "--"], ["no cluster is recorded"]),
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
