"""Autoscaling for real on one machine: Ray's fake multi-node provider with cluster/local-autoscale.yaml.

Pending demand of N one-CPU tasks makes the autoscaler launch N worker nodes (real raylets
on this host); once idle, they are removed. Token auth is on throughout.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, assert_all_gone, tree_pids

from rayscale import nodes, procs

pytestmark = pytest.mark.cluster

DRIVER = """
import ray, sys, time
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
@ray.remote(num_cpus=1)
def work():
    time.sleep(10)
    return ray.get_runtime_context().get_node_id()
print(len(set(ray.get([work.remote() for _ in range(int(sys.argv[2]))]))))
"""


def _workers(url, token):
    return nodes.alive_workers(url, token) or 0


def test_demand_launches_workers_and_idle_ones_go(tmp_path):
    port, dash, client, metrics = procs.free_ports(4)
    cfg = yaml.safe_load((ROOT / "cluster" / "local-autoscale.yaml").read_text())
    cfg["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    (tmp_path / "autoscale.yaml").write_text(yaml.safe_dump(cfg))
    token = secrets.token_hex(16)
    env = dict(
        os.environ,
        RAY_FAKE_CLUSTER="1",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
    )
    temp = Path(tempfile.mkdtemp(prefix="rayscale-"))
    ray = str(Path(sys.executable).parent / "ray")
    head = procs.spawn(
        [
            ray,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=0",
            f"--temp-dir={temp}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}",
            f"--metrics-export-port={metrics}",
            f"--autoscaling-config={tmp_path / 'autoscale.yaml'}",
            "--disable-usage-stats",
        ],
        env,
        tmp_path / "head.log",
    )
    address, url = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
    seen: set[int] = set()
    try:
        assert procs.wait_for(lambda: procs.port_open("127.0.0.1", port), 60), (
            tmp_path / "head.log"
        ).read_text()
        assert procs.wait_for(lambda: nodes.alive_workers(url, token) is not None, 60)
        assert _workers(url, token) == 0  # min_workers 0: nothing runs without demand
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, address, "2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak, deadline = 0, time.monotonic() + 90
        while peak < 2 and time.monotonic() < deadline:
            peak = max(peak, _workers(url, token))
            seen |= tree_pids([head])
            time.sleep(0.5)
        out, err = driver.communicate(timeout=120)
        assert peak == 2, f"the autoscaler launched {peak} of 2 workers"
        assert driver.returncode == 0, err[-2000:]
        assert int(out.strip().splitlines()[-1]) >= 2  # the tasks really ran on the new nodes
        # idle_timeout_minutes 0.25: idle workers are removed.
        assert procs.wait_for(lambda: _workers(url, token) == 0, 90, interval=1), (
            "idle workers were not removed"
        )
    finally:
        seen |= tree_pids([head])
        procs.stop(head)
        shutil.rmtree(temp, ignore_errors=True)
    assert_all_gone(seen)
