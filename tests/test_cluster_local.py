"""The local provider on a real cluster of Ray processes, through the CLI: status, scale,
security, a dead record. The provider contract itself (down twice, a vanished cluster...)
is tests/test_provider_conformance.py."""

from __future__ import annotations

import contextlib
import json
import socket
import stat
from pathlib import Path

import psutil
import pytest
from conftest import (
    assert_all_gone,
    assert_one_line_error,
    kill_all,
    recorded_pids,
    run_cli,
    tree_pids,
)

pytestmark = pytest.mark.cluster


def status(state):
    return json.loads(run_cli("cluster", "status", "--json", state_dir=state, check=True).stdout)


def test_up_gives_head_without_cpus_and_two_workers(cluster):
    st = status(cluster)
    heads = [n for n in st["nodes"] if n["role"] == "head"]
    workers = [n for n in st["nodes"] if n["role"] == "worker"]
    assert len(heads) == 1 and heads[0]["cpus"] == 0 and heads[0]["state"] == "alive"
    assert len(workers) == 2 and all(w["state"] == "alive" and w["cpus"] == 1 for w in workers)
    # Explicit sizes, not the whole host: 1.5 GiB each as asked.
    assert all(abs(w["memory_gib"] - 1.5) < 0.01 for w in workers)
    assert st["dashboard_url"].startswith("http://127.0.0.1:")


def test_token_file_is_private(cluster):
    # Where each port listens and what it answers without the token: tests/test_ports.py.
    mode = stat.S_IMODE((cluster / "auth_token").stat().st_mode)
    assert mode == 0o600
    # The token is never printed by status.
    token = (cluster / "auth_token").read_text().strip()
    assert token not in run_cli("cluster", "status", "--json", state_dir=cluster).stdout


def test_every_node_runs_plain_ray_start_with_the_runtimes_flags(cluster):
    """Each node is Ray's own `ray start` (no wrapper, nothing patched), with the flags
    rayscale.runtime writes for every provider, under token auth."""
    procs, rec = recorded_pids(cluster)
    for pr, node in zip(procs, [rec["head"], *rec["workers"]], strict=True):
        p = psutil.Process(pr["pid"])
        argv = p.cmdline()
        assert Path(argv[1]).name == "ray" and argv[2] == "start", argv
        assert f"--node-name={node['name']}" in argv and "--block" in argv
        assert ("--head" in argv) == (node is rec["head"])
        env = p.environ()
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_USAGE_STATS_ENABLED"] == "0"
        assert "RAY_AUTH_TOKEN" not in env and env["RAY_AUTH_TOKEN_PATH"]


def test_second_up_on_running_state_dir_is_refused(cluster):
    p = run_cli("cluster", "up", "--workers", 1, state_dir=cluster)
    assert_one_line_error(p, "already runs", "cluster down")
    assert status(cluster)["alive_workers"] == 2


def test_a_named_cluster_runs_beside_the_default_one(cluster):
    """`--cluster NAME` records a second cluster in the same state dir, with ports, token
    and processes of its own; `cluster list` shows both; the fixes it prints name it."""
    p = run_cli("cluster", "status", "--cluster", "side", state_dir=cluster)
    assert_one_line_error(p, "no cluster is recorded", "`rayscale cluster up --cluster side`")
    run_cli(
        "cluster", "up", "--cluster", "side", "--workers", 1, "--memory-per-worker", 1,
        state_dir=cluster, check=True,
    )  # fmt: skip
    side = cluster / "clusters" / "side"
    procs, rec = recorded_pids(side)
    try:
        listed = json.loads(run_cli("cluster", "list", "--json", state_dir=cluster).stdout)
        assert [(r["name"], r["provider"], r["workers"], r["state"]) for r in listed] == [
            ("default", "local", 2, "running"),
            ("side", "local", 1, "running"),
        ]
        assert listed[0]["dashboard"] != listed[1]["dashboard"]
        assert (side / "auth_token").read_text() != (cluster / "auth_token").read_text()
        st = json.loads(
            run_cli("cluster", "status", "--json", "--cluster", "side", state_dir=cluster).stdout
        )
        assert st["alive_workers"] == 1 and st["dashboard_url"] == listed[1]["dashboard"]
        # The environment picks it too, as RAYSCALE_STATE_DIR picks the state dir.
        p = run_cli("job", "list", state_dir=cluster, env={"RAYSCALE_CLUSTER": "side"}, check=True)
        assert p.returncode == 0
    finally:
        run_cli("cluster", "down", "--cluster", "side", state_dir=cluster, check=True)
    assert_all_gone(tree_pids(procs), rec["temp_root"])
    listed = json.loads(run_cli("cluster", "list", "--json", state_dir=cluster).stdout)
    assert [r["name"] for r in listed] == ["default"] and status(cluster)["alive_workers"] == 2


def test_scale_down_and_up_again(cluster):
    procs, _ = recorded_pids(cluster)
    removed = tree_pids([procs[-1]])
    run_cli("cluster", "scale", "--workers", 1, state_dir=cluster, check=True)
    st = status(cluster)
    assert st["alive_workers"] == 1 and st["worker_cpus"] == 1
    assert_all_gone(removed)  # the removed worker's processes really stopped
    run_cli("cluster", "scale", "--workers", 2, state_dir=cluster, check=True)
    assert status(cluster)["alive_workers"] == 2
    # `scale` takes no shape: it checks (and would add) workers of the size the cluster was
    # made with (1.5 GiB here), not the CLI's default 2 GiB.
    p = run_cli("cluster", "scale", "--workers", 400, state_dir=cluster)
    assert p.returncode != 0 and "398 more workers of 1.5 GiB need about" in p.stderr, p.stderr
    assert status(cluster)["alive_workers"] == 2


def test_dead_cluster_record_is_detected_and_cleaned(tmp_path):
    run_cli(
        "cluster", "up", "--workers", 1, "--memory-per-worker", 1, state_dir=tmp_path, check=True
    )
    procs, rec = recorded_pids(tmp_path)
    pids = tree_pids(procs)
    kill_all(pids)  # the machine "crashes": every process of the cluster dies at once
    # A new `up` on that state dir notices the dead record, cleans it and starts afresh.
    run_cli(
        "cluster", "up", "--workers", 1, "--memory-per-worker", 1, state_dir=tmp_path, check=True
    )
    assert not __import__("os").path.exists(rec["temp_root"])
    procs2, rec2 = recorded_pids(tmp_path)
    pids2 = tree_pids(procs2)
    run_cli("cluster", "down", state_dir=tmp_path, check=True)
    assert_all_gone(pids2, rec2["temp_root"])


@pytest.mark.drill  # waits out Ray's fixed 30 s start-up window: make drills
def test_a_worker_that_cannot_start_keeps_its_raylet_logs_and_leaves_nothing(tmp_path, monkeypatch):
    """A worker whose node-manager port another program took between the kit's pick and
    its raylet's bind (a real listener on that port): `up` fails with one error naming the
    worker's raylet and agent logs, kept beside its `ray start` log (its temp dir goes with
    the failed up, and `ray start` itself says only that the node timed out), and no
    process or temp dir of the cluster is left. Takes Ray's fixed 30 s start-up wait."""
    from rayscale import procs
    from rayscale.errors import UserError
    from rayscale.providers.base import NodeShape
    from rayscale.providers.local import LocalProvider
    from rayscale.state import StateDir

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    real, calls = procs.free_ports, []

    def picked(n):
        ports = real(n)
        calls.append(n)
        if len(calls) == 3:  # the head's own 3, the head's node 5, then the worker's 5
            ports[-1] = port  # --node-manager-port, the last of LocalProvider._spawn's
        return ports

    monkeypatch.setattr(procs, "free_ports", picked)
    plans, real_plan = [], LocalProvider._plan

    def recorded_plan(self, workers):  # the record names the cluster's temp dir
        plans.append(real_plan(self, workers))
        return plans[-1]

    monkeypatch.setattr(LocalProvider, "_plan", recorded_plan)
    p = LocalProvider(StateDir(tmp_path), NodeShape.sized(1, 1.0))
    try:
        with pytest.raises(UserError) as e:
            p.up(1, timeout=120)
    finally:
        taken.close()
    kept = tmp_path / "logs" / "w0-ray"
    assert "worker w0 exited while starting: " in e.value.problem and str(kept) in e.value.problem
    assert "timed out during startup" in e.value.problem  # ray start's own reason, quoted
    raylet = "".join(f.read_text(errors="replace") for f in kept.glob("raylet.*"))
    assert str(port) in raylet, sorted(x.name for x in kept.iterdir())
    temp_root = plans[0]["temp_root"]
    left = []
    for pr in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if temp_root in " ".join(pr.cmdline()):
                left.append(pr.pid)
    assert not left and not Path(temp_root).exists()
