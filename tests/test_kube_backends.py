"""Behaviour the kit relies on, shown by the emulator and by a real Kubernetes with the real
KubeRay operator: one test body, a fixture that picks the backend.

Both sides run in `make e2e-k8s`: the real one against the one-node cluster of
`make k8s-up` (RAYSCALE_K8S_KUBECONFIG names its kubeconfig, and
RAYSCALE_KUBECTL its kubectl); each test there works in a namespace of its own.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time

import pytest
from conftest import IMAGE, needs_crds, needs_docker

from rayscale import manifests, procs
from rayscale.errors import UserError
from rayscale.providers.kuberay import KubeRayProvider
from rayscale.state import StateDir

# Both sides run in make e2e-k8s (the real one needs its cluster); make test keeps its time.
pytestmark = [needs_crds, needs_docker(), pytest.mark.k8s_e2e]
REAL = os.environ.get("RAYSCALE_K8S_KUBECONFIG")


class Emulated:
    """tests/kube_emulator.py: the API server, KubeRay's operator and a kubelet on Docker."""

    def __init__(self, emu):
        self.emu, self.api, self.ns = emu, emu.api, "ml"

    def exec(self, pod: str, *cmd: str) -> subprocess.CompletedProcess:
        return self.emu.exec(pod, self.ns, *cmd)

    def pod_names(self, cluster: str, node_type: str) -> list[str]:
        return self.emu.pod_names(self.ns, cluster, node_type)

    def close(self):
        pass


class Real:
    """The one-node Kubernetes of `make k8s-up`: a namespace of this test's own."""

    def __init__(self, kubeconfig: str):
        from kubernetes import client, config

        c = config.new_client_from_config(config_file=kubeconfig)
        self.api = (client.CustomObjectsApi(c), client.CoreV1Api(c), client.StorageV1Api(c),
                    client.AppsV1Api(c), client.NetworkingV1Api(c))  # fmt: skip
        self.kubectl = [os.environ.get("RAYSCALE_KUBECTL", "kubectl"), "--kubeconfig", kubeconfig]
        self.ns = "rs-test-" + secrets.token_hex(3)
        self.api[1].create_namespace({"metadata": {"name": self.ns}})

    def exec(self, pod: str, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.kubectl, "-n", self.ns, "exec", pod, "-c", "ray-head", "--",
                               *cmd], capture_output=True, text=True, timeout=60)  # fmt: skip

    def pod_names(self, cluster: str, node_type: str) -> list[str]:
        sel = f"ray.io/cluster={cluster},ray.io/node-type={node_type}"
        return [p.metadata.name for p in self.api[1].list_namespaced_pod(self.ns, label_selector=sel).items]  # fmt: skip

    def close(self):
        # the namespace and all in it, waited for: its pods' requests free for the next test
        self.api[1].delete_namespace(self.ns)
        procs.wait_for(
            lambda: self.ns not in [n.metadata.name for n in self.api[1].list_namespace().items],
            180,
        )


@pytest.fixture(params=["emulated", "real"])
def kube(request, monkeypatch):
    if request.param == "real":
        if not REAL:
            pytest.skip("no real Kubernetes up: make e2e-k8s runs this against one")
        monkeypatch.setenv("KUBECONFIG", REAL)
        k = Real(REAL)
    else:  # the emulator swaps kubectl for its port-forward stand-in
        k = Emulated(request.getfixturevalue("emulate")(node_cpus=2))  # the real node's cores
    yield k
    k.close()


def provider(tmp_path, kube, **options) -> KubeRayProvider:
    return KubeRayProvider(StateDir(tmp_path / "state"), api=kube.api, namespace=kube.ns,
                           **options)  # fmt: skip


def test_a_raycluster_the_operator_refuses_is_named_at_once(tmp_path, kube):
    """The API server takes a RayCluster named with 54 characters; KubeRay's validation
    refuses it (at most 53), makes no pods and says so in a Warning event. `up` reads the
    operator's events and stops at once with its words, not "no head pod" after 600 s."""
    name = "rs-" + "x" * 51
    p = provider(tmp_path, kube, name=name, profile="kind", image=IMAGE)
    t0 = time.monotonic()
    with pytest.raises(UserError) as e:
        p.up(1, timeout=600)
    assert e.value.problem == (
        f"the operator refused RayCluster {name}: InvalidRayClusterMetadata: The RayCluster "
        f"metadata is invalid {kube.ns}/{name}: RayCluster name should be no more than 53 "
        "characters"
    )
    assert time.monotonic() - t0 < 30
    assert p.state.read() is None and not kube.pod_names(name, "head")


def test_a_create_in_a_missing_namespace_names_it(tmp_path, kube):
    """The API server answers a create in a namespace that does not exist with a 404 whose
    Status names the namespace (a read there is only "not found"): `up` says which."""
    p = KubeRayProvider(StateDir(tmp_path / "s"), api=kube.api, namespace="nope-" + kube.ns,
                        profile="kind")  # fmt: skip
    with pytest.raises(UserError, match=f"namespace 'nope-{kube.ns}' does not exist.*kubectl "
                       f"create namespace nope-{kube.ns}"):  # fmt: skip
        p.up(1, timeout=10)
    assert p.state.read() is None


def test_a_worker_that_does_not_fit_is_named(tmp_path, kube):
    """The kind sizes on a 2-CPU node: the head (1 CPU) and its autoscaler (0.5) are placed,
    a 1-CPU worker is not. A node pool may still grow, so `up` waits its timeout, then
    names the pod in the scheduler's words."""
    p = provider(tmp_path, kube, profile="kind", image=IMAGE, storage_class=_class(kube))
    with pytest.raises(UserError, match=r"0 pods Ready.*workers-worker-\w+: Unschedulable: 0/1 "
                       "nodes are available: 1 Insufficient cpu"):  # fmt: skip
        p.up(1, timeout=30)
    assert p.state.read() is None


def test_hostpath_results_are_not_writable_by_the_pods(tmp_path, kube):
    """A hostPath results volume, run as the kubelet runs it: made by root 0755, fsGroup
    not applied, so the pods' uid 1000 cannot write it (why the kit uses a claim)."""
    name = "rs-hostpath-" + secrets.token_hex(2)
    doc = manifests.raycluster(name, 0, manifests.PROFILES["small"], image=IMAGE,
                               namespace=kube.ns)  # fmt: skip
    for t in (doc["spec"]["headGroupSpec"]["template"], doc["spec"]["workerGroupSpecs"][0]["template"]):  # fmt: skip
        vols = t["spec"]["volumes"]
        vols[[v["name"] for v in vols].index("results")] = {
            "name": "results",
            "hostPath": {"path": f"/tmp/rayscale-hostpath-{name}", "type": "DirectoryOrCreate"},
        }
    kube.api[0].create_namespaced_custom_object("ray.io", "v1", kube.ns, "rayclusters", doc)

    def running():
        sel = f"ray.io/cluster={name},ray.io/node-type=head"
        pods = kube.api[1].list_namespaced_pod(kube.ns, label_selector=sel).items
        return bool(pods) and pods[0].status.phase == "Running"

    try:
        assert procs.wait_for(running, 120)
        head = kube.pod_names(name, "head")[0]
        denied = kube.exec(head, "touch", "/home/ray/rayscale_results/x")
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        assert kube.exec(head, "touch", "/tmp/ray/x").returncode == 0, "emptyDir is writable"
    finally:
        kube.api[0].delete_namespaced_custom_object("ray.io", "v1", kube.ns, "rayclusters", name)
        if REAL and os.path.isdir(f"/tmp/rayscale-hostpath-{name}"):
            os.rmdir(f"/tmp/rayscale-hostpath-{name}")


def _class(kube) -> str | None:
    """The real cluster's StorageClass (static volumes); the emulator's kind class."""
    return "rayscale-local" if isinstance(kube, Real) else None


def test_pods_pass_restricted_and_only_the_autoscaler_holds_the_api_token(tmp_path, kube):
    """In a namespace that enforces the restricted Pod Security Standard, the cluster comes
    up (the API server admits every pod the operator makes of the kit's templates), and
    of the head's containers only the autoscaler sidecar has a service-account token: a
    job's code in `ray-head` cannot call the Kubernetes API as the cluster."""
    if not isinstance(kube, Real):
        pytest.skip("the emulator admits every pod and runs no autoscaler sidecar")
    kube.api[1].patch_namespace(
        kube.ns, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    p = provider(tmp_path, kube, profile="small", image=IMAGE, storage_class=_class(kube))
    try:
        p.up(1, timeout=300)
        (head,) = kube.pod_names(p._record()["name"], "head")
        token = manifests.SA_PATH + "/token"
        assert kube.exec(head, "test", "-e", token).returncode == 1, "ray-head holds the token"
        sidecar = subprocess.run(
            [*kube.kubectl, "-n", kube.ns, "exec", head, "-c", "autoscaler", "--",
             "test", "-s", token], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sidecar.returncode == 0, sidecar.stderr
        # The sidecar reaches the API with it: it reads the RayCluster it scales.
        pod = kube.api[1].read_namespaced_pod(head, kube.ns)
        (status,) = [c for c in pod.status.container_statuses if c.name == "autoscaler"]
        assert status.ready and status.restart_count == 0
        logs = kube.api[1].read_namespaced_pod_log(head, kube.ns, container="autoscaler")
        assert "Forbidden" not in logs and "Unauthorized" not in logs, logs[-2000:]
    finally:
        p.down()
