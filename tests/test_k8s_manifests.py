"""Every Kubernetes manifest the kit ships (k8s/) or renders, checked without a cluster.

KubeRay resources against the v1 openAPIV3Schema of the real KubeRay v1.7.0 CRDs in
../shared/kuberay-crds/ (made strict: an unknown field is an error, where the API server
would silently drop it), plus the admission rules KubeRay's operator applies; core
resources and every Ray pod template against the Kubernetes schemas (kubernetes-validate);
then the kit's policy.
"""

from __future__ import annotations

import copy
import functools
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import ROOT, needs_crds
from kube_emulator import K8S_VERSION, crd_schema

from rayscale import manifests, runtime

SHIPPED = manifests.shipped()


def strict(schema):
    """The CRD schema with additionalProperties false wherever it lists properties."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


KINDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}


@functools.cache
def schema(kind: str) -> dict:
    return strict(crd_schema(KINDS[kind]))


def rendered():
    """What the providers render, besides the shipped files: several sizes and profiles."""
    for name, p in manifests.PROFILES.items():
        for n in (1, 3, 20):
            yield f"{name}-raycluster-{n}", manifests.raycluster("rs", n, p, namespace="ml")
        yield (
            f"{name}-rayjob-args",
            manifests.rayjob("rs-job", p, 4, job_args=["--num-samples", "4"]),
        )


ALL = [*SHIPPED.items(), *rendered()]
RAY = [(k, d) for k, d in ALL if d.get("kind") in KINDS]


def test_shipped_files_are_the_template_output():
    """k8s/ is generated: one source of truth (rayscale/manifests.py). `make k8s-manifests`."""
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "k8s").rglob("*.yaml")}
    assert on_disk == set(SHIPPED), "run `make k8s-manifests`"
    for rel, doc in SHIPPED.items():
        assert yaml.safe_load((ROOT / rel).read_text()) == doc, (
            f"{rel} drifted: run `make k8s-manifests`"
        )


@needs_crds
@pytest.mark.parametrize("key,doc", RAY, ids=[k for k, _ in RAY])
def test_kuberay_resources_match_the_v1_crd_schema(key, doc):
    jsonschema.validate(doc, schema(doc["kind"]))
    rules = (
        manifests.kuberay_rules(doc["spec"])
        if doc["kind"] == "RayCluster"
        else manifests.rayjob_rules(doc)
    )
    assert rules == []


@pytest.mark.parametrize("key,doc", RAY, ids=[k for k, _ in RAY])
def test_every_ray_pod_is_a_valid_pod(key, doc):
    for pod in manifests.scan_pods(doc):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_core_resources_are_valid():
    for profile in manifests.PROFILES:
        kubernetes_validate.validate(
            SHIPPED[f"k8s/{profile}/results-pvc.yaml"], K8S_VERSION, strict=True
        )
    assert SHIPPED["k8s/cloud/results-pvc.yaml"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert SHIPPED["k8s/kind/results-pvc.yaml"]["spec"]["storageClassName"] == "standard"
    assert SHIPPED["k8s/kind-config.yaml"]["apiVersion"] == "kind.x-k8s.io/v1alpha4"


def test_only_its_ray_clusters_pods_reach_the_kits_redis():
    """The Redis of --gcs-ft redis: its NetworkPolicy selects the Redis pods, and admits
    only its RayCluster's pods (KubeRay labels the head, the workers and the cleanup Job
    with ray.io/cluster) on the Redis port."""
    from rayscale.providers import gcs_ft

    policy = gcs_ft.network_policy("rs", "ml")
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    pods = gcs_ft.deployment("rs", "ml", gcs_ft.IMAGE)["spec"]["template"]["metadata"]["labels"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["podSelector"]["matchLabels"].items() <= pods.items()
    (rule,) = spec["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"ray.io/cluster": "rs"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": gcs_ft.PORT}]
    other = gcs_ft.deployment("rs2", "ml", gcs_ft.IMAGE)["spec"]["template"]["metadata"]
    assert not spec["podSelector"]["matchLabels"].items() <= other["labels"].items()


@needs_crds
def test_the_checks_can_fail():
    """The validators reject what the operator or API server would."""
    doc = manifests.raycluster("rs", 2, manifests.PROFILES["kind"])
    typo = copy.deepcopy(doc)
    typo["spec"]["workerGroupSpecs"][0]["replica"] = 2  # silently dropped by the API server
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema("RayCluster"))
    bad = copy.deepcopy(doc)
    bad["spec"]["workerGroupSpecs"][0].update(minReplicas=5, maxReplicas=2)
    bad["spec"]["workerGroupSpecs"][0]["template"]["spec"]["restartPolicy"] = "Always"
    assert len(manifests.kuberay_rules(bad["spec"])) == 2
    old = copy.deepcopy(doc)
    old["spec"]["rayVersion"] = "2.49.0"
    assert any("2.52" in e for e in manifests.kuberay_rules(old["spec"]))
    job = manifests.rayjob("j", manifests.PROFILES["kind"], cluster="rs")
    job["spec"]["ttlSecondsAfterFinished"] = 60
    assert manifests.rayjob_rules(job) == ["ttlSecondsAfterFinished needs shutdownAfterJobFinishes"]
    pod = manifests.scan_pods(doc)[0]
    pod["spec"]["containers"][0]["resource"] = {
        "limits": {"cpu": "1"}
    }  # misspelt: strict rejects it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def _cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _containers(spec):
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [(g, c) for g in groups for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("key,doc", RAY, ids=[k for k, _ in RAY])
def test_policy(key, doc):
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"].get("rayClusterSpec")
    if spec is None:  # a RayJob on an existing cluster: no cluster of its own to check
        assert doc["spec"]["clusterSelector"]["ray.io/cluster"]
        assert "shutdownAfterJobFinishes" not in doc["spec"]
        return
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "the head runs no trials"
    assert spec["headGroupSpec"]["rayStartParams"] == runtime.start_params(
        runtime.head(dashboard_host="0.0.0.0", sized=False)
    ), "the head's flags are rayscale.runtime's"
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP" and not spec["headGroupSpec"].get(
        "enableIngress"
    )
    assert spec["enableInTreeAutoscaling"] is True
    assert (
        spec["autoscalerOptions"]["version"] == "v2"
        and spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    )
    for _, c in _containers(spec):
        assert re.search(r":\d+\.\d+\.\d+$", c["image"]) and not c["image"].endswith(":latest")
        assert c["imagePullPolicy"] == "IfNotPresent"
        req, lim = c["resources"]["requests"], c["resources"]["limits"]
        assert {"cpu", "memory"} <= lim.keys(), "KubeRay sizes a Ray node from its limits"
        assert req["memory"] == lim["memory"], "memory is never overcommitted"
        # Burstable CPU only where a profile says so (small: 2 workers on 2 cores)
        assert _cpu(req["cpu"]) <= _cpu(lim["cpu"])
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        # Every node's env is runtime's (token auth itself is KubeRay's authOptions).
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env == {k: v for k, v in runtime.NODE_ENV.items() if k != "RAY_AUTH_MODE"}
    # The service-account token only in the autoscaler sidecar: a job's code in the Ray
    # containers cannot call the Kubernetes API as the cluster.
    for g, c in _containers(spec):
        assert g["template"]["spec"]["automountServiceAccountToken"] is False
        assert not any("serviceaccount" in m["mountPath"] for m in c["volumeMounts"]), c["name"]
    head_vols = {v["name"] for v in spec["headGroupSpec"]["template"]["spec"]["volumes"]}
    (sa,) = spec["autoscalerOptions"]["volumeMounts"]
    assert sa["mountPath"] == manifests.SA_PATH and sa["name"] in head_vols and sa["readOnly"]
    for g in spec["workerGroupSpecs"]:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        for t in (g["template"], spec["headGroupSpec"]["template"]):
            vols = {v["name"]: v for v in t["spec"]["volumes"]}
            # hostPath is made by root 0755 and fsGroup does not apply: uid 1000 cannot write it.
            assert "persistentVolumeClaim" in vols["results"] and not any(
                "hostPath" in v for v in vols.values()
            )
            assert "ray-logs" in vols, "KubeRay shares logs with the autoscaler only by this name"
    if doc["kind"] == "RayJob":
        assert (
            doc["spec"]["shutdownAfterJobFinishes"] is True
            and doc["spec"]["ttlSecondsAfterFinished"] > 0
        )
        assert "/opt/rayscale/job/tune_xgboost.py" in doc["spec"]["entrypoint"], (
            "the job ships in the image"
        )
