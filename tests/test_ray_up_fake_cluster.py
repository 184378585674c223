"""The ray-up provider for real on one machine: Ray's fake multi-node autoscaler.

`rayscale cluster up --provider ray-up --config cluster/local-autoscale.yaml` starts a
head with the autoscaling config, whose autoscaler launches real raylets; a job runs on it
through the same commands as anywhere. Its scale (min = max workers in the config) and
down are in tests/test_provider_conformance.py.
"""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, TINY, assert_all_gone, run_cli, tree_pids

pytestmark = pytest.mark.cluster
CONFIG = ROOT / "cluster" / "local-autoscale.yaml"


def _status(state):
    return json.loads(run_cli("cluster", "status", "--json", state_dir=state, check=True).stdout)


def test_a_job_runs_on_the_autoscaled_cluster(tmp_path):
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
        # The rendered config, not the kit's file, pins this cluster's size (min = max = N).
        assert "max_workers: 4" in CONFIG.read_text()
        rendered = (state / "config" / "cluster.yaml").read_text()
        assert "max_workers: 1" in rendered and "min_workers: 1" in rendered
        p = run_cli(
            "job", "submit", "--json", "--", *TINY, "--num-samples", 2, state_dir=state, check=True
        )
        res = json.loads(p.stdout.strip().splitlines()[-1])
        assert res["trials_completed"] == 2 and res["cluster"]["worker_nodes"] == 1
    finally:
        seen |= tree_pids([rec["head"]])
        run_cli("cluster", "down", state_dir=state, check=True)
    assert_all_gone(seen, rec["temp_root"])
    assert not (state / "cluster.json").exists() and not (state / "config").exists()
