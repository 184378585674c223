"""`cluster up --dry-run` and `job submit --rayjob --dry-run`: what would be created, printed
from the same code that creates it, with nothing created, written or asked of a platform."""

from __future__ import annotations

import json
import re
import shlex

import psutil
import pytest
import yaml
from conftest import run_cli

from rayscale.state import StateDir


def _sections(out: str) -> dict[str, str]:
    """`# title` blocks of a dry run, by title."""
    found = re.findall(r"^# ([^\n]*)\n(.*?)(?=^# |\Z)", out, re.S | re.M)
    return {title: text.strip() for title, text in found}


def _dry(tmp_path, *args) -> dict[str, str]:
    state = tmp_path / "state"
    p = run_cli("cluster", "up", "--dry-run", *args, state_dir=state)
    assert p.returncode == 0, p.stderr
    assert not state.exists(), "a dry run wrote the state dir"
    return _sections(p.stdout)


@pytest.mark.cluster
def test_the_local_dry_run_prints_the_ray_start_that_up_ran(cluster, tmp_path):
    """The session cluster's worker w0 runs exactly the `ray start` the dry run prints for
    it, ports and temp dir aside (picked at `up`)."""
    rec = json.loads((cluster / "cluster.json").read_text())
    shape = rec["shape"]
    p = run_cli(
        "cluster", "up", "--dry-run", "--workers", 1,
        "--cpus-per-worker", shape["cpus_per_worker"],
        "--memory-per-worker", shape["memory_per_worker_gib"],
        state_dir=cluster,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    ((title, text),) = _sections(p.stdout).items()
    assert "a head (no trials) and 1 worker of 1 CPU, 1.5 GiB memory" in title
    head_line, worker_line = text.splitlines()
    words = shlex.split(worker_line)
    env = [w for w in words[: words.index("ray")]]
    assert "RAY_AUTH_MODE=token" in env and f"RAY_AUTH_TOKEN_PATH={cluster / 'auth_token'}" in env
    printed = words[words.index("ray") + 1 :]
    w0 = next(w for w in rec["workers"] if w["name"] == "w0")
    ran = psutil.Process(w0["proc"]["pid"]).cmdline()
    ran = ran[ran.index("start") :]
    assert len(printed) == len(ran), (printed, ran)
    for want, got in zip(printed, ran, strict=True):
        pattern = re.escape(want).replace(r"\$FREE_PORT", r"\d+")
        pattern = pattern.replace(r"\$TEMP_DIR", re.escape(rec["temp_root"]))
        assert re.fullmatch(pattern, got), (want, got)
    assert "--head" in head_line and "--num-cpus=0" in head_line


def test_docker_and_ray_up_dry_runs(tmp_path):
    docker = _dry(tmp_path, "--provider", "docker", "--workers", 2, "--cpus-per-worker", 2,
                  "--memory-per-worker", 3)  # fmt: skip
    ((title, text),) = docker.items()
    assert "a head container (1 CPU, 3 GiB) and 2 workers of 2 CPU and 3.75 GiB" in title
    runs = [line for line in text.splitlines() if " run " in line]
    assert len(runs) == 3
    for line in runs:  # every container: non-root-safe flags, the token by file, never exposed
        assert "--cap-drop ALL" in line and "no-new-privileges" in line
        assert "--env-file" in line and "RAY_AUTH_TOKEN=" not in line
    assert "-p 127.0.0.1::8265" in runs[0]
    assert all("--cpus=2 " in line and "--num-cpus=2" in line for line in runs[1:])

    fake = _dry(tmp_path, "--provider", "ray-up", "--config", "cluster/local-autoscale.yaml")
    launcher, head = fake.values()
    cfg = yaml.safe_load(launcher)
    workers = [t for t in cfg["available_node_types"].values() if t.get("max_workers")]
    assert [(t["min_workers"], t["max_workers"]) for t in workers] == [(2, 2)]
    assert "RAY_FAKE_CLUSTER=1" in head and "--autoscaling-config=" in head

    aws = _dry(tmp_path, "--provider", "ray-up", "--config", "cluster/aws.yaml", "--workers", 3)
    launcher, command = aws.values()
    assert yaml.safe_load(launcher)["file_mounts"]["/home/ray/.ray/auth_token"].endswith(
        "auth_token"
    )
    assert re.search(r"ray up -y --no-config-cache \S+/config/cluster\.yaml$", command)


def test_kubernetes_dry_runs_print_what_the_api_server_would_get(tmp_path):
    """kuberay: the RayCluster (token auth, pinned size), the results claim and, with
    `--gcs-ft redis`, the Redis; kind adds its cluster config and set-up commands. No
    kubeconfig is read: the context named does not exist."""
    out = _dry(tmp_path, "--provider", "kuberay", "--image", "reg.example/rayscale:0.1.0",
               "--context", "nowhere", "--namespace", "ml", "--workers", 3,
               "--gcs-ft", "redis")  # fmt: skip
    titles = list(out)
    rc = yaml.safe_load(out[titles[0]])
    assert rc["kind"] == "RayCluster" and rc["metadata"]["namespace"] == "ml"
    assert rc["spec"]["authOptions"]["mode"] == "token"
    group = rc["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 3
    assert "gcsFaultToleranceOptions" in rc["spec"]
    assert yaml.safe_load(out[titles[1]])["kind"] == "PersistentVolumeClaim"
    kinds = [d["kind"] for d in yaml.safe_load_all(out[titles[2]])]
    assert kinds == ["Deployment", "Service", "NetworkPolicy"]
    assert "&id" not in out[titles[2]]  # no YAML anchors: kubectl apply -f takes it as is

    kind = _dry(tmp_path, "--provider", "kind", "--workers", 1)
    config, setup, *kuberay = kind.values()
    assert yaml.safe_load(config)["kind"] == "Cluster"
    assert re.search(r"kind create cluster --name rayscale --config \S+kind-config\.yaml", setup)
    assert "helm" in setup and "kind load docker-image" in setup
    assert yaml.safe_load(kuberay[0])["spec"]["workerGroupSpecs"][0]["replicas"] == 1


def test_a_rayjob_dry_run_prints_the_rayjob_and_asks_nothing(tmp_path):
    """On a recorded kuberay cluster (its context reachable or not), the RayJob that
    `--rayjob` would create; without --rayjob, --dry-run is one clear error."""
    state = StateDir(str(tmp_path / "s"))
    state.write(
        {"provider": "kuberay", "name": "rayscale-abc123", "namespace": "ml",
         "context": "nowhere", "created": 0}
    )  # fmt: skip
    p = run_cli("job", "submit", "--rayjob", "--dry-run", "--", "--num-samples", 4,
                state_dir=tmp_path / "s")  # fmt: skip
    assert p.returncode == 0, p.stderr
    job = yaml.safe_load(p.stdout)
    assert job["kind"] == "RayJob" and job["metadata"]["namespace"] == "ml"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "rayscale-abc123"}
    assert "--num-samples 4" in job["spec"]["entrypoint"]

    plain = run_cli("job", "submit", "--dry-run", state_dir=tmp_path / "s")
    assert plain.returncode != 0 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().count("\n") == 0 and "add --rayjob" in plain.stderr
