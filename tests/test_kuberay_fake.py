"""The kuberay provider against a faithful fake of the Kubernetes API (tests/fake_kube.py).

Kubernetes cannot run here (no node image can be pulled). The fake answers the exact
client calls the provider makes, validates every RayCluster against the real KubeRay
v1.7.0 CRD schema, and its operator runs a real Ray cluster of local processes, so
readiness, the token from the Secret, the port-forward (a TCP relay standing in for
kubectl) and a real job are exercised. `make e2e-kind` runs the real thing elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from conftest import TINY, assert_all_gone
from fake_kube import FakeKube

from rayscale import jobs, procs
from rayscale.errors import UserError
from rayscale.providers.kuberay import KubeRayProvider
from rayscale.state import StateDir

pytestmark = pytest.mark.cluster
FAKE_KUBECTL = str(Path(__file__).with_name("fake_kubectl.py"))


@pytest.fixture
def kube(tmp_path, monkeypatch):
    fake = FakeKube(tmp_path / "kube")
    targets = tmp_path / "targets.json"
    targets.write_text("{}")
    monkeypatch.setenv("RAYSCALE_KUBECTL", FAKE_KUBECTL)
    monkeypatch.setenv("FAKE_KUBE_TARGETS", str(targets))
    orig = fake.reconcile

    def reconcile(ns, name):  # keep svc/<name>-head-svc pointing at the real dashboard
        orig(ns, name)
        targets.write_text(json.dumps({f"{n}-head-svc": fake.target_port(n) for n in fake.ray}))

    fake.reconcile = reconcile
    yield fake
    fake.shutdown()


def provider(tmp_path, kube, **options):
    return KubeRayProvider(StateDir(tmp_path / "state"), api=(kube.custom, kube.core),
                           namespace="ml", name="rs-test", **options)


def test_up_job_scale_down_fake_kube(tmp_path, kube):
    p = provider(tmp_path, kube)
    p.up(2, timeout=120)
    rec = p._record()
    fwd = rec["forward"]
    try:
        # The RayCluster the API server got: the kit's manifest, 2 workers, token auth.
        created = kube.objects[("ml", "rs-test")]
        group = created["spec"]["workerGroupSpecs"][0]
        assert group["replicas"] == group["minReplicas"] == 2
        assert created["spec"]["authOptions"] == {"mode": "token"}
        assert created["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        # The token is the operator's Secret's, in a 0600 file.
        assert p.state.token() == kube.ray["rs-test"].state.token()
        assert (p.state.token_file.stat().st_mode & 0o777) == 0o600
        st = p.status()
        assert st.alive_workers == 2 and st.dashboard_url.startswith("http://127.0.0.1:")
        # A real job through the port-forward.
        j = jobs.Jobs(p.endpoint())
        job = j.submit([*TINY, "--num-samples", "2"])
        assert j.wait(job, 180) == "SUCCEEDED"
        assert j.result(job)["trials_completed"] == 2
        # The forward dies (pod restart, idle timeout): endpoint() brings it back.
        procs.stop(fwd, grace=2)
        ep = p.endpoint()
        assert procs.wait_for(lambda: jobs.Jobs(ep).status(job) == "SUCCEEDED", 30)
        fwd = p._record()["forward"]
        # Scale: one patch of the worker group, pinned for the autoscaler too.
        p.scale(1, timeout=120)
        patch = [c for c in kube.calls if c[0] == "patch"][-1][3]
        g = patch["spec"]["workerGroupSpecs"][0]
        assert g["replicas"] == g["minReplicas"] == g["maxReplicas"] == 1
        assert p.status().alive_workers == 1
        ray_pids = {pid for pr in [kube.ray["rs-test"]._record()["head"]["proc"]] for pid in
                    [pr["pid"], *(c.pid for c in psutil.Process(pr["pid"]).children(recursive=True))]}
    finally:
        p.down()
    assert ("delete", "ml", "rs-test") in kube.calls
    assert ("ml", "rs-test") not in kube.objects and "rs-test" not in kube.ray
    assert not procs.alive(fwd), "the port-forward outlived the cluster"
    assert_all_gone(ray_pids)
    assert p.state.read() is None


def test_missing_operator_is_one_clear_error_fake_kube(tmp_path, kube):
    kube.crd_installed = False
    p = provider(tmp_path, kube)
    with pytest.raises(UserError, match="no RayCluster API.*helm install kuberay-operator"):
        p.up(1, timeout=10)
    assert p.state.read() is None


def test_unschedulable_workers_are_named_fake_kube(tmp_path, kube):
    kube.schedulable = False
    p = provider(tmp_path, kube)
    with pytest.raises(UserError, match="head pod of rs-test is not ready: Unschedulable.*Insufficient memory"):
        p.up(2, timeout=3)
    # Nothing half-done: the RayCluster it created is deleted again.
    assert ("delete", "ml", "rs-test") in kube.calls and not kube.objects
    assert p.state.read() is None


def test_second_cluster_with_the_same_name_is_refused_fake_kube(tmp_path, kube):
    kube.objects[("ml", "rs-test")] = {"metadata": {"name": "rs-test"}}  # someone else's
    p = provider(tmp_path, kube)
    with pytest.raises(UserError, match="already exists"):
        p.up(1, timeout=5)
    assert ("ml", "rs-test") in kube.objects, "never delete what this up did not create"


def test_unknown_context_lists_the_known_ones(tmp_path, monkeypatch):
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": n, "context": {"cluster": "c", "user": "u"}} for n in ("a", "kind-rayscale")],
    }))
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    monkeypatch.setenv("RAYSCALE_KUBECTL", FAKE_KUBECTL)
    p = KubeRayProvider(StateDir(tmp_path / "state"), context="prod")
    with pytest.raises(UserError, match=r"no context 'prod' \(it has: a, kind-rayscale\).*--context"):
        p.up(1)
    assert p.state.read() is None  # refused before anything was created
