"""Bad input to the CLI: one line naming the problem and the fix, exit != 0, no traceback."""

from __future__ import annotations

import pytest

from conftest import assert_one_line_error, run_cli


@pytest.mark.parametrize("args,needles", [
    (["cluster", "up", "--workers", "0"], ["--workers", "at least 1"]),
    (["cluster", "up", "--workers", "-1"], ["--workers", "at least 1"]),
    (["cluster", "up", "--workers", "abc"], ["--workers", "not a whole number"]),
    (["cluster", "up", "--workers", "2", "--provider", "nope"], ["unknown provider 'nope'", "local"]),
    (["cluster", "up", "--workers", "500", "--memory-per-worker", "64"], ["available", "fewer --workers"]),
    (["cluster", "up", "--cpus-per-worker", "0"], ["--cpus-per-worker"]),
    (["cluster", "scale", "--workers", "2"], ["no cluster is recorded", "cluster up"]),
    (["cluster", "status"], ["no cluster is recorded"]),
    (["job", "submit", "--address", "http://127.0.0.1:9", "--"], ["cannot reach", "--address"]),
    (["job", "submit", "--address", "ftp://x", "--"], ["bad address"]),
    (["job", "status", "x", "--address", "http://127.0.0.1:9"], ["cannot reach"]),
    (["job", "submit", "--"], ["no cluster is recorded"]),
    (["cluster", "frobnicate"], ["no such command"]),
])
def test_bad_cli_input(tmp_path, args, needles):
    p = run_cli(*args, state_dir=tmp_path / "state")
    assert_one_line_error(p, *needles)
    # Nothing half-done: no cluster record, no token.
    assert not (tmp_path / "state" / "cluster.json").exists()
    assert not (tmp_path / "state" / "auth_token").exists()
