"""The ray-up provider for real on one machine: Ray's fake multi-node autoscaler.

`rayscale cluster up --provider ray-up --config cluster/local-autoscale.yaml` starts a
head with the autoscaling config; the provider's scale (min = max workers in the config)
and wait (nodes alive, read through the dashboard) drive the autoscaler, which launches
and removes real raylets. A job runs on it through the same commands as anywhere.
"""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, TINY, assert_all_gone, run_cli, tree_pids

pytestmark = pytest.mark.cluster
CONFIG = ROOT / "cluster" / "local-autoscale.yaml"


def _status(state):
    return json.loads(run_cli("cluster", "status", "--json", state_dir=state, check=True).stdout)


def test_scale_and_wait_drive_the_autoscaler(tmp_path):
    state = tmp_path / "state"
    run_cli(
        "cluster",
        "up",
        "--provider",
        "ray-up",
        "--config",
        CONFIG,
        "--workers",
        1,
        state_dir=state,
        check=True,
    )
    rec = json.loads((state / "cluster.json").read_text())
    seen = tree_pids([rec["head"]])
    try:
        assert _status(state)["alive_workers"] == 1
        # The rendered config, not the kit's file, holds this cluster's size.
        assert "max_workers: 4" in CONFIG.read_text()
        run_cli("cluster", "scale", "--workers", 3, state_dir=state, check=True)
        st = _status(state)
        assert st["alive_workers"] == 3 and st["worker_cpus"] == 3
        seen |= tree_pids([rec["head"]])
        # Scaling down is not left to the idle timeout: max_workers drops to 1.
        p = run_cli("cluster", "scale", "--workers", 1, state_dir=state, check=True)
        assert _status(state)["alive_workers"] == 1, p.stderr
        p = run_cli(
            "job", "submit", "--json", "--", *TINY, "--num-samples", 2, state_dir=state, check=True
        )
        res = json.loads(p.stdout.strip().splitlines()[-1])
        assert res["trials_completed"] == 2 and res["cluster"]["worker_nodes"] == 1
        # A second `up` on the same state dir is refused while this one lives.
        again = run_cli(
            "cluster", "up", "--provider", "ray-up", "--config", CONFIG, state_dir=state
        )
        assert again.returncode != 0 and "already runs" in again.stderr
    finally:
        seen |= tree_pids([rec["head"]])
        run_cli("cluster", "down", state_dir=state, check=True)
    assert_all_gone(seen, rec["temp_root"])
    assert not (state / "cluster.json").exists() and not (state / "config").exists()
