"""The Ray cluster-launcher YAMLs in cluster/: Ray's own schema and validator, and policy.

No cloud here: each file is checked against the JSON schema the installed ray package
ships for the cluster launcher, then through the same prepare_config / validate_config
steps `ray up` runs before it launches anything.
"""

from __future__ import annotations

import json
import os
import re

import jsonschema
import pytest
import ray
import yaml
from conftest import ROOT

from rayscale import runtime

FILES = sorted((ROOT / "cluster").glob("*.yaml"))
CLOUD = [f for f in FILES if f.name in ("aws.yaml", "gcp.yaml", "onprem.yaml")]
SCHEMA = json.loads(
    open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")).read()
)


def load(f):
    return yaml.safe_load(f.read_text())


def test_the_three_launch_targets_ship():
    assert {f.name for f in CLOUD} == {"aws.yaml", "gcp.yaml", "onprem.yaml"}


@pytest.mark.parametrize("f", CLOUD, ids=lambda f: f.name)
def test_valid_for_the_installed_ray(f):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = load(f)
    jsonschema.validate(cfg, SCHEMA)
    validate_config(prepare_config(cfg))
    # Keys removed from the launcher: their presence means an outdated example was copied.
    for old in (
        "min_workers",
        "initial_workers",
        "target_utilization_fraction",
        "autoscaling_mode",
        "head_node",
        "worker_nodes",
    ):
        assert old not in cfg, f"{f.name}: {old} is no longer a top-level key"


@pytest.mark.parametrize("f", CLOUD, ids=lambda f: f.name)
def test_policy(f):
    cfg = load(f)
    if cfg["provider"]["type"] == "local":  # on-prem: Ray runs on the hosts themselves
        assert "docker" not in cfg
    else:
        image = cfg["docker"]["image"]
        assert re.search(r":\d+\.\d+\.\d+$", image), (
            f"{f.name}: image {image} is not pinned to a version"
        )
        assert not image.endswith(":latest")
        assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    head = " ".join(cfg["head_start_ray_commands"])
    worker = " ".join(cfg["worker_start_ray_commands"])
    assert "--num-cpus=0" in head, "the head runs no trials"
    for cmds in (head, worker):
        assert "RAY_AUTH_MODE=token" in cmds, "token auth on every node"
    assert "/home/ray/.ray/auth_token" in cfg["file_mounts"], "every node gets the token"
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head, "dashboard not exposed"
    assert cfg["idle_timeout_minutes"] <= 10
    # The job is in the image: no setup command installs rayscale, the job or its deps.
    setup = " ".join(cfg.get("setup_commands", []) + cfg.get("worker_setup_commands", []))
    assert "xgboost" not in setup and "rayscale" not in setup and "tune_xgboost" not in setup
    for node_type, spec in cfg.get("available_node_types", {}).items():
        if node_type == cfg["head_node_type"]:
            assert spec["resources"].get("CPU") == 0
        else:
            assert spec["min_workers"] >= 0 and spec["max_workers"] >= 1
            # Workers write trial checkpoints: they need credentials for the shared bucket
            # (Ray's launcher gives only the head an identity of its own).
            creds = spec["node_config"].get("IamInstanceProfile") or spec["node_config"].get(
                "serviceAccounts"
            )
            assert creds, f"{f.name}: {node_type} cannot write a results bucket"


@pytest.mark.parametrize("f", CLOUD, ids=lambda f: f.name)
def test_start_commands_are_the_runtimes(f):
    """The checked-in YAMLs' start commands are what rayscale.runtime writes (the one place
    Ray's flags are built; `make cluster-yamls` rewrites them)."""
    text = f.read_text()
    assert text == runtime.launcher_yaml(text, f.name), f"run `make cluster-yamls`: {f.name}"
    cfg = load(f)
    want = runtime.launcher_commands(runtime.LAUNCHER_FILES[f.name])
    for key, cmds in want.items():
        assert cfg[key] == cmds


def test_the_images_environment_is_every_nodes():
    """docker/Dockerfile's ENV holds rayscale.runtime's NODE_ENV (token auth on, no usage
    stats): a node started from the image by any tool gets them, and a change in runtime
    that the Dockerfile misses fails here (a Dockerfile cannot read Python)."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    env = dict(re.findall(r"^\s*(?:ENV\s+)?(RAY_\w+)=(\S+?)\s*\\?$", text, re.M))
    missing = {k: v for k, v in runtime.NODE_ENV.items() if env.get(k) != v}
    assert not missing, f"docker/Dockerfile's ENV lacks {missing}"
