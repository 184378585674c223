"""A faithful fake of the Kubernetes API calls the kuberay provider makes, with a KubeRay
operator behind it whose Ray cluster is real.

Kubernetes cannot run here. This fake answers the same kubernetes-client methods with the
same shapes (custom objects as dicts; pods and secrets as the client's own V1 models;
errors as kubernetes.client.ApiException with the API server's status codes), and checks
each RayCluster it is given against the real KubeRay v1.7.0 CRD schema, as the API server
would. Its "operator" reconciles a RayCluster by running a real local Ray cluster (the
local provider) with as many workers as the worker group's replicas, publishes one pod per
node, and writes the token Secret the way KubeRay does (named after the cluster, key
auth_token). `kubectl port-forward` is stood in for by tests/tcp_proxy.py pointed at that
real cluster's dashboard.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
from pathlib import Path

import jsonschema
import yaml
from kubernetes import client
from kubernetes.client import ApiException

from rayscale.providers.base import NodeShape
from rayscale.providers.local import LocalProvider
from rayscale.state import StateDir

CRDS = Path(__file__).resolve().parent.parent.parent / "shared" / "kuberay-crds"


def crd_schema(kind_file: str) -> dict:
    d = yaml.safe_load((CRDS / kind_file).read_text())
    return next(v for v in d["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def _error(status: int, reason: str) -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps({"kind": "Status", "status": "Failure", "reason": reason, "code": status})
    return e


class FakeKube:
    """(custom, core) as the provider uses them: pass `(fake.custom, fake.core)` as api."""

    def __init__(self, workdir: Path, crd_installed: bool = True, schedulable: bool = True):
        self.workdir = workdir
        self.crd_installed = crd_installed
        self.schedulable = schedulable
        self.objects: dict[tuple[str, str], dict] = {}
        self.secrets: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple] = []
        self.ray: dict[str, LocalProvider] = {}
        self.schema = crd_schema("ray.io_rayclusters.yaml")
        self.custom = _Custom(self)
        self.core = _Core(self)

    # ---- the operator -------------------------------------------------------------------

    def reconcile(self, ns: str, name: str) -> None:
        obj = self.objects.get((ns, name))
        if obj is None:
            if name in self.ray:
                self.ray.pop(name).down()
            return
        if not self.schedulable:
            return  # pods stay Pending: the scheduler finds no node with room
        replicas = obj["spec"]["workerGroupSpecs"][0]["replicas"]
        p = self.ray.get(name)
        if p is None:
            p = LocalProvider(StateDir(self.workdir / f"ray-{name}"), NodeShape.sized(1, 1.0))
            p.up(replicas)
            self.ray[name] = p
            token = p.state.token()
            self.secrets[(ns, name)] = {"auth_token": base64.b64encode(token.encode()).decode()}
        elif len(p._record()["workers"]) != replicas:
            p.scale(replicas)

    def target_port(self, name: str) -> int:
        """The real dashboard behind svc/<name>-head-svc, for the port-forward stand-in."""
        return int(self.ray[name]._record()["dashboard_url"].rsplit(":", 1)[1])

    def shutdown(self) -> None:
        for p in self.ray.values():
            p.down()
        self.ray.clear()


class _Custom:
    def __init__(self, k: FakeKube):
        self.k = k

    def _check(self, group, version, plural):
        if not self.k.crd_installed or (group, version, plural) != ("ray.io", "v1", "rayclusters"):
            raise _error(404, "Not Found")

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.k.calls.append(("create", namespace, body["metadata"]["name"]))
        self._check(group, version, plural)
        name = body["metadata"]["name"]
        if (namespace, name) in self.k.objects:
            raise _error(409, "AlreadyExists")
        try:
            jsonschema.validate(body, self.k.schema)
        except jsonschema.ValidationError as e:
            raise _error(422, f"Invalid: {e.message}") from None
        obj = copy.deepcopy(body)
        obj["metadata"].update(namespace=namespace, uid=f"uid-{name}", generation=1)
        self.k.objects[(namespace, name)] = obj
        self.k.reconcile(namespace, name)
        return copy.deepcopy(obj)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.k.calls.append(("get", namespace, name))
        self._check(group, version, plural)
        if (namespace, name) not in self.k.objects:
            raise _error(404, "Not Found")
        return copy.deepcopy(self.k.objects[(namespace, name)])

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.k.calls.append(("patch", namespace, name, copy.deepcopy(body)))
        self._check(group, version, plural)
        obj = self.k.objects.get((namespace, name))
        if obj is None:
            raise _error(404, "Not Found")
        merged = _merge(copy.deepcopy(obj), body)  # JSON merge patch: lists are replaced whole
        try:
            jsonschema.validate(merged, self.k.schema)
        except jsonschema.ValidationError as e:
            raise _error(422, f"Invalid: {e.message}") from None
        merged["metadata"]["generation"] += 1
        self.k.objects[(namespace, name)] = merged
        self.k.reconcile(namespace, name)
        return copy.deepcopy(merged)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.k.calls.append(("delete", namespace, name))
        self._check(group, version, plural)
        if self.k.objects.pop((namespace, name), None) is None:
            raise _error(404, "Not Found")
        self.k.secrets.pop((namespace, name), None)
        self.k.reconcile(namespace, name)
        return {"kind": "Status", "status": "Success"}


class _Core:
    def __init__(self, k: FakeKube):
        self.k = k

    def list_namespaced_pod(self, namespace, label_selector=""):
        want = dict(kv.split("=", 1) for kv in label_selector.split(",") if kv)
        pods = []
        for (ns, name), obj in self.k.objects.items():
            if ns != namespace or want.get("ray.io/cluster", name) != name:
                continue
            p = self.k.ray.get(name)
            workers = p._record()["workers"] if p else []
            replicas = obj["spec"]["workerGroupSpecs"][0]["replicas"]
            members = [("head", f"{name}-head-x7k2p", p is not None)]
            if p:
                members += [("worker", f"{name}-workers-worker-{w['index']:05d}", True) for w in workers]
            else:
                members += [("worker", f"{name}-workers-worker-{i:05d}", False) for i in range(replicas)]
            for kind, pod_name, running in members:
                if want.get("ray.io/node-type", kind) == kind:
                    pods.append(self._pod(namespace, name, kind, pod_name, running))
        return client.V1PodList(items=pods)

    def _pod(self, ns, cluster, kind, name, running):
        if running:
            status = client.V1PodStatus(phase="Running", pod_ip="127.0.0.1", conditions=[
                client.V1PodCondition(type="Ready", status="True")])
        else:
            status = client.V1PodStatus(phase="Pending", conditions=[client.V1PodCondition(
                type="PodScheduled", status="False", reason="Unschedulable",
                message="0/1 nodes are available: 1 Insufficient memory.")])
        return client.V1Pod(metadata=client.V1ObjectMeta(
            name=name, namespace=ns, labels={"ray.io/cluster": cluster, "ray.io/node-type": kind},
            creation_timestamp=datetime.datetime.now(datetime.timezone.utc)), status=status)

    def read_namespaced_secret(self, name, namespace):
        self.k.calls.append(("read_secret", namespace, name))
        data = self.k.secrets.get((namespace, name))
        if data is None:
            raise _error(404, "Not Found")
        return client.V1Secret(metadata=client.V1ObjectMeta(name=name, namespace=namespace), data=dict(data))


def _merge(target: dict, patch: dict) -> dict:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target
