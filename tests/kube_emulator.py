"""A test emulator of Kubernetes + the KubeRay 1.7 operator whose pods run on the real
Docker engine, with the kit's real image.

A real Kubernetes and KubeRay operator run here too (make k8s-up / e2e-k8s), but not in
`make test`'s time: this emulator plays, in seconds, what the real cluster cannot stage in
a test (a registry that times out, an NFS share, API races, a crash loop's back-off), and
tests/test_kube_backends.py runs the same bodies on both. Emulated so that it fails where
the real system would:

- the API: the kubernetes-client methods the kuberay provider calls, answered as the API
  server answers (V1 models; ApiException with its codes and Status bodies). RayClusters
  are checked against the KubeRay v1.7.0 CRD schema; unknown fields are pruned with a
  warning, not refused; a missing namespace is a 404 whose Status names it; a missing
  resource type a plain 404.
- the operator (ray-operator/controllers/ray/common/pod.go at v1.7.0, ported for what the
  kit uses): the token Secret named after the cluster (key auth_token); pods built from the
  group templates: the `ray start` line from rayStartParams and the container's limits,
  the env it injects (token, RAY_ADDRESS, FQ_RAY_IP, ...), the volumes it adds by name
  (shared-mem at /dev/shm, ray-logs at /tmp/ray shared with the autoscaler sidecar) or
  skips where the path is mounted, the wait-gcs-ready init container of workers, the
  head Service `<name>-head-svc`, HTTP readiness probes on the agent port. With in-tree
  autoscaling, pods over `replicas` are not deleted by the operator: the autoscaler
  removes them after its delay, which this emulator plays.
- the kubelet: each pod a container on one Docker network (the one node of a kind
  cluster) with the pod's user and group, fsGroup as a supplementary group, capabilities
  dropped, no-new-privileges, CPU / memory limits; init containers run to completion
  first; emptyDir a 0777 directory (medium Memory: tmpfs), hostPath a directory made the
  kubelet's way (root, 0755; fsGroup does not apply), a PersistentVolumeClaim through its
  StorageClass's provisioner (kind's rancher.io/local-path: 0777 directories, ReadWriteOnce
  only), images that are not on the engine failing as ErrImagePull / ImagePullBackOff.

- RayJob (K8sJobMode), as rayjob_controller.go runs it: its own RayCluster
  `<job>-<5 chars>` from rayClusterSpec (or the one clusterSelector names); once every pod
  is ready, a submitter pod with the head's image, KubeRay's default submitter resources,
  the token from the cluster's Secret and KubeRay's command line (wait for the dashboard's
  GCS health, `ray job submit --no-wait --submission-id`, `ray job logs --follow`); the
  job's status read from the dashboard when the submitter ends; the cluster deleted with
  the RayJob (owner reference).
- GCS fault tolerance on a Redis (raycluster_controller.go): the finalizer
  ray.io/gcs-ft-redis-cleanup-finalizer on such a RayCluster; on delete, its pods go, then
  the Redis cleanup Job's pod (buildRedisCleanupJob: the head's pod, Ray container only,
  KubeRay's command line) runs once; the object goes when it has ended either way or
  passed its 300 s deadline.
- Deployments (one ReplicaSet's pods from the template; container restarts are not
  played) and ClusterIP Services, whose names reach the pods their selector matches.
- the scheduler, for one node: a pod is placed on its containers' requests (the largest
  init container's, or the sum of the others') against the node's allocatable CPUs and
  memory, which the test sets (a laptop's, a cloud node's); a pod that does not fit stays
  Pending, Unschedulable, "0/1 nodes are available: 1 Insufficient cpu.".

Not emulated: the autoscaler process (its sidecar is in the head pod's spec but is not
started: it needs an API server), RBAC, other nodes. Docker cannot give a container more
CPUs than this machine has, so --cpus is capped at its cores (the emulated node may be
larger: the scheduler counts the requests as asked).
"""

from __future__ import annotations

import base64
import copy
import datetime
import functools
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client import ApiException

CRDS = Path(
    os.environ.get("RAYSCALE_KUBERAY_CRDS")
    or Path(__file__).resolve().parent.parent.parent / "shared" / "kuberay-crds"
)
HEALTH_PATH, AGENT_PORT, METRICS_PORT = "/api/healthz", 52365, 8080
# The Kubernetes schema kubernetes-validate checks objects against.
K8S_VERSION = "1.33.0"
# kind's default class, and what a cloud offers: block storage by default, a file class beside it.
KIND_CLASSES = {"standard": ("rancher.io/local-path", True)}
LOCAL_PATH_DIR = "/var/local-path-provisioner"  # kind's local-path-config nodePathMap
MAX_RAYCLUSTER_NAME = 53  # KubeRay's utils/constant.go: MaxRayClusterNameLength
CLOUD_CLASSES = {
    "gp3": ("ebs.csi.aws.com", True),
    "efs": ("efs.csi.aws.com", False),
    "nfs-csi": ("nfs.csi.k8s.io", False),
}
# Provisioners whose new volume is the share's root as the server made it (root 0755), and
# whose CSI driver skips fsGroup (csi-driver-nfs: fsGroupPolicy None by default).
ROOT_OWNED = {"nfs.csi.k8s.io"}
RWX_PROVISIONERS = {
    "efs.csi.aws.com",
    "nfs.csi.k8s.io",
    "filestore.csi.storage.gke.io",
    "file.csi.azure.com",
}


@functools.cache
def _crd_schema(kind_file: str) -> dict:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-1.4 MB of YAML
    d = yaml.load((CRDS / kind_file).read_text(), Loader=loader)
    return next(v for v in d["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def crd_schema(kind_file: str) -> dict:
    return copy.deepcopy(_crd_schema(kind_file))


def api_error(
    status: int, reason: str, message: str = "", details: dict | None = None
) -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason.replace(" ", ""),
            "details": details or {},
            "code": status,
        }
    )
    return e


def quantity(q: Any) -> float:
    """A Kubernetes quantity ("500m", "2Gi", "1") as a float of its base unit."""
    s = str(q)
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "m": 1e-3,
    }
    for suffix, factor in units.items():
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor
    return float(s)


def prune(obj: Any, schema: dict, path: str, dropped: list[str]) -> Any:
    """Drop fields the structural schema does not know, as the API server does."""
    if (
        isinstance(obj, dict)
        and schema.get("type") == "object"
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is not None:
            for k in list(obj):
                if k not in props:
                    dropped.append(f"{path}.{k}")
                    del obj[k]
                else:
                    obj[k] = prune(obj[k], props[k], f"{path}.{k}", dropped)
        elif isinstance(extra, dict):
            for k in obj:
                obj[k] = prune(obj[k], extra, f"{path}.{k}", dropped)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [prune(x, schema["items"], f"{path}[{i}]", dropped) for i, x in enumerate(obj)]
    return obj


# ---- the operator: pods as KubeRay 1.7 builds them ----------------------------------------


def _ray_start_params(
    params: dict[str, str], head: bool, fqdn: str, port: str, limits: dict
) -> dict[str, str]:
    p = dict(params)
    if head:
        p.setdefault("dashboard-host", "0.0.0.0")
    else:
        p.setdefault("address", f"{fqdn}:{port}")
    p.setdefault("metrics-export-port", str(METRICS_PORT))
    p["block"] = "true"
    p.setdefault("dashboard-agent-listen-port", str(AGENT_PORT))
    if "num-cpus" not in p and limits.get("cpu"):
        p["num-cpus"] = str(math.ceil(quantity(limits["cpu"])))  # Quantity.Value() rounds up
    if "memory" not in p and limits.get("memory"):
        p["memory"] = str(int(quantity(limits["memory"])))
    return p


def _flags(params: dict[str, str]) -> str:
    special = {"log-color", "include-dashboard", "include-log-monitor"}
    out = []
    for k in sorted(params):
        v = params[k]
        if v.lower() in ("true", "false") and k not in special:
            if v.lower() == "true":
                out.append(f"--{k}")
        else:
            out.append(f"--{k}={v}")
    return " ".join(out)


def _token_env(cluster: str, auth: dict | None) -> list[dict]:
    if (auth or {}).get("mode") != "token":
        return []
    return [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {
            "name": "RAY_AUTH_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": auth.get("secretName") or cluster, "key": "auth_token"}
            },
        },
    ]


def _add_env(container: dict, env: list[dict]) -> None:
    have = {e["name"] for e in container.setdefault("env", [])}
    container["env"] += [e for e in env if e["name"] not in have]


def _add_empty_dir(pod_spec: dict, container: dict, name: str, path: str, medium: str = "") -> None:
    """pod.go addEmptyDir: skip when the container mounts `path` already (by any name)."""
    if any(m["mountPath"] == path for m in container.get("volumeMounts", [])):
        return
    if not any(v["name"] == name for v in pod_spec.setdefault("volumes", [])):
        ed: dict[str, Any] = {"medium": medium} if medium else {}
        if medium == "Memory":
            ed["sizeLimit"] = (container.get("resources", {}).get("limits") or {}).get("memory")
        pod_spec["volumes"].append({"name": name, "emptyDir": ed})
    container.setdefault("volumeMounts", []).append({"name": name, "mountPath": path})


def _gcs_fault_tolerance(rc: dict, template: dict, ray: dict, params: dict, head: bool) -> None:
    """pod.go configureGCSFaultTolerance / configureRedisFT, for gcsFaultToleranceOptions
    with a Redis: the head stores the GCS there under the cluster's uid; workers wait up to
    600 s for a GCS that comes back."""
    ft = rc["spec"].get("gcsFaultToleranceOptions")
    notes = template.setdefault("metadata", {}).setdefault("annotations", {})
    if head:
        notes["ray.io/ft-enabled"] = "true" if ft else "false"
    if not ft:
        return
    if not head:
        _add_env(ray, [{"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "600"}])
        return
    storage_ns = (
        ft.get("externalStorageNamespace")
        or (rc["metadata"].get("annotations") or {}).get("ray.io/external-storage-namespace")
        or rc["metadata"]["uid"]
    )
    notes["ray.io/external-storage-namespace"] = storage_ns
    _add_env(ray, [{"name": "RAY_external_storage_namespace", "value": storage_ns}])
    _add_env(ray, [{"name": "RAY_REDIS_ADDRESS", "value": ft["redisAddress"]}])
    if ft.get("redisPassword"):
        params["redis-password"] = "$REDIS_PASSWORD"
        _add_env(ray, [{"name": "REDIS_PASSWORD", **ft["redisPassword"]}])


def build_pod(rc: dict, node_type: str, group: dict, pod_name: str) -> dict:
    """The Pod KubeRay 1.7 makes for one member of a RayCluster (head or a worker group)."""
    name, ns, spec = rc["metadata"]["name"], rc["metadata"]["namespace"], rc["spec"]
    head = node_type == "head"
    svc = f"{name}-head-svc"
    fqdn = f"{svc}.{ns}.svc.cluster.local"
    port = spec["headGroupSpec"].get("rayStartParams", {}).get("port", "6379")
    template = copy.deepcopy(group["template"])
    pod_spec = template["spec"]
    ray = pod_spec["containers"][0]
    auth = spec.get("authOptions")
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    group_name = "headgroup" if head else group["groupName"]
    labels = {
        **(template.get("metadata", {}).get("labels") or {}),
        "ray.io/cluster": name,
        "ray.io/node-type": node_type,
        "ray.io/group": group_name,
        "ray.io/identifier": f"{name}-{node_type}",
        "ray.io/is-ray-node": "yes",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }
    if not head:  # ENABLE_INIT_CONTAINER_INJECTION defaults to true
        script = (
            f"SECONDS=0; while true; do if ray health-check --address {fqdn}:{port} >/dev/null 2>&1; then "
            f'echo "GCS is ready."; break; fi; echo "$SECONDS seconds elapsed: Waiting for GCS to be ready."; '
            "sleep 5; done"
        )
        init = {
            "name": "wait-gcs-ready",
            "image": ray["image"],
            "imagePullPolicy": ray.get("imagePullPolicy"),
            "command": ["/bin/bash", "-c", "--"],
            "args": [script],
            "securityContext": copy.deepcopy(ray.get("securityContext")),
            "env": copy.deepcopy(ray.get("env", [])),
            "volumeMounts": copy.deepcopy(ray.get("volumeMounts", [])),
            "resources": {
                "limits": {"cpu": "200m", "memory": "256Mi"},
                "requests": {"cpu": "200m", "memory": "256Mi"},
            },
        }
        pod_spec.setdefault("initContainers", []).append(init)
    params = _ray_start_params(
        group.get("rayStartParams") or {},
        head,
        fqdn,
        port,
        (ray.get("resources") or {}).get("limits") or {},
    )
    if head and autoscaling:
        params["no-monitor"] = "true"
        scaler = {
            "name": "autoscaler",
            "image": ray["image"],
            "command": ["/bin/bash", "-lc", "--"],
            "args": [
                "ray kuberay-autoscaler --cluster-name $(RAY_CLUSTER_NAME) "
                "--cluster-namespace $(RAY_CLUSTER_NAMESPACE)"
            ],
        }
        opts = spec.get("autoscalerOptions") or {}
        for k in ("resources", "securityContext", "imagePullPolicy"):
            if k in opts:
                scaler[k] = copy.deepcopy(opts[k])
        # pod.go: the Ray container's mounts, then autoscalerOptions.volumeMounts appended.
        scaler["volumeMounts"] = copy.deepcopy(ray.get("volumeMounts") or []) + copy.deepcopy(
            opts.get("volumeMounts") or []
        )
        _add_env(scaler, _token_env(name, auth))
        pod_spec["containers"].append(scaler)
        if opts.get("version") == "v2":
            _add_env(ray, [{"name": "RAY_ENABLE_AUTOSCALER_V2", "value": "true"}])
            pod_spec["restartPolicy"] = "Never"
    if not head and autoscaling and (spec.get("autoscalerOptions") or {}).get("version") == "v2":
        pod_spec["restartPolicy"] = "Never"
    _add_env(ray, _token_env(name, auth))
    for c in pod_spec.get("initContainers", []):
        if c["name"] == "wait-gcs-ready":
            _add_env(c, _token_env(name, auth))
    _add_empty_dir(pod_spec, ray, "shared-mem", "/dev/shm", "Memory")
    if head and autoscaling:
        _add_empty_dir(pod_spec, ray, "ray-logs", "/tmp/ray")
        _add_empty_dir(pod_spec, pod_spec["containers"][1], "ray-logs", "/tmp/ray")
    _gcs_fault_tolerance(rc, template, ray, params, head)
    start = f"ray start --head {_flags(params)}" if head else f"ray start {_flags(params)}"
    cmd = " ".join(ray.get("command", []) + ray.get("args", []))
    if "ray start" not in cmd:
        generated = f"ulimit -n ${{RAY_START_ULIMIT_OPEN_FILES:-65536}}; {start}"
        ray["command"] = ["/bin/bash", "-c", "--"]
        ray["args"] = [f"{cmd} && {generated}" if cmd else generated]
    for c in pod_spec.get("initContainers", []):
        _add_env(c, [{"name": "FQ_RAY_IP", "value": fqdn}, {"name": "RAY_IP", "value": svc}])
    env = []
    if not head:
        env += [{"name": "FQ_RAY_IP", "value": fqdn}, {"name": "RAY_IP", "value": svc}]
    env += [
        {
            "name": "RAY_CLUSTER_NAME",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ray.io/cluster']"}},
        },
        {
            "name": "RAY_CLUSTER_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {
            "name": "RAY_CLOUD_INSTANCE_ID",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        },
        {
            "name": "RAY_NODE_TYPE_NAME",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ray.io/group']"}},
        },
        {"name": "KUBERAY_GEN_RAY_START_CMD", "value": start},
        {"name": "RAY_PORT", "value": port},
        {"name": "RAY_ADDRESS", "value": f"{'127.0.0.1' if head else fqdn}:{port}"},
        {"name": "RAY_USAGE_STATS_KUBERAY_IN_USE", "value": "1"},
        {"name": "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE", "value": "1"},
    ]
    _add_env(ray, env)
    # utils/constant.go: the head's probe asks two endpoints, so it waits longer.
    probe = {
        "httpGet": {"path": HEALTH_PATH, "port": int(params["dashboard-agent-listen-port"])},
        "initialDelaySeconds": 10,
        "timeoutSeconds": 5 if head else 2,
        "periodSeconds": 5,
        "successThreshold": 1,
        "failureThreshold": 10,
    }
    ray.setdefault("readinessProbe", probe)
    ray.setdefault("livenessProbe", {**probe, "initialDelaySeconds": 30, "failureThreshold": 120})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": ns,
            "labels": labels,
            "annotations": (template.get("metadata") or {}).get("annotations") or {},
        },
        "spec": pod_spec,
    }


REDIS_CLEANUP_FINALIZER = "ray.io/gcs-ft-redis-cleanup-finalizer"


def redis_cleanup_pod(rc: dict, pod_name: str) -> dict:
    """The pod of the Job KubeRay 1.7 runs when a RayCluster with GCS fault tolerance on a
    Redis is deleted (raycluster_controller.go: buildRedisCleanupJob): the head pod, its
    Ray container only, running Ray's cleanup of the cluster's keys with the head's Redis
    address and password."""
    pod = build_pod(rc, "head", rc["spec"]["headGroupSpec"], pod_name)
    pod["metadata"]["labels"]["ray.io/node-type"] = "redis-cleanup"
    spec = pod["spec"]
    ray = spec["containers"][0]
    spec["containers"] = [ray]
    spec["restartPolicy"] = "Never"
    ray["command"] = ["/bin/bash", "-lc", "--"]
    ray["args"] = [
        'python -c "from ray._private.gcs_utils import cleanup_redis_storage; '
        "from urllib.parse import urlparse; import os; import sys; "
        "redis_address = os.getenv('RAY_REDIS_ADDRESS', '').split(',')[0]; "
        "redis_address = redis_address if '://' in redis_address else 'redis://' + redis_address; "
        "parsed = urlparse(redis_address); "
        "sys.exit(1) if not cleanup_redis_storage(host=parsed.hostname, port=parsed.port, "
        "password=os.getenv('REDIS_PASSWORD', parsed.password or ''), "
        "use_ssl=parsed.scheme=='rediss', "
        "storage_namespace=os.getenv('RAY_external_storage_namespace')) else None\""
    ]
    ray.pop("livenessProbe", None)
    ray.pop("readinessProbe", None)
    _add_env(
        ray,
        [
            {"name": "RAY_redis_db_connect_retries", "value": "120"},
            {"name": "RAY_redis_db_connect_wait_milliseconds", "value": "500"},
        ],
    )
    ray["resources"] = {
        "limits": {"cpu": "200m", "memory": "256Mi"},
        "requests": {"cpu": "200m", "memory": "256Mi"},
    }
    return pod


def deployment_pod(dep: dict, pod_name: str) -> dict:
    """The pod a Deployment's ReplicaSet makes from its template."""
    template = copy.deepcopy(dep["spec"]["template"])
    spec = template["spec"]
    spec.setdefault("restartPolicy", "Always")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": dep["metadata"]["namespace"],
            "labels": dict((template.get("metadata") or {}).get("labels") or {}),
            "annotations": {},
        },
        "spec": spec,
    }


# ---- the kubelet: a pod as Docker containers ----------------------------------------------


class Pod:
    def __init__(
        self, manifest: dict, cluster: str, node_type: str, group: str, aliases: list[str]
    ):
        self.manifest = manifest
        self.name = manifest["metadata"]["name"]
        self.ns = manifest["metadata"]["namespace"]
        self.cluster, self.node_type, self.group, self.aliases = cluster, node_type, group, aliases
        self.created = datetime.datetime.now(datetime.UTC)
        self.started_at: float | None = None
        self.containers: dict[str, str] = {}  # container name -> docker name
        self.init: dict[str, dict] = {}  # init container name -> {"state": ..., "code": ...}
        self.waiting: tuple[str, str] | None = None  # main container waiting (reason, message)
        self.unschedulable: str | None = None
        self.deleting = False
        self.scheduled = False
        self.ready = False
        self.last_probe = 0.0
        self.live_failures = 0


class KubeEmulator:
    """Pass `emu.api` as the kuberay provider's api; call `shutdown()` at the end."""

    def __init__(
        self,
        workdir: Path,
        namespaces=("default",),
        classes=None,
        default_class="standard",
        crd_installed: bool = True,
        random_pod_delete: bool = False,
        docker: str | None = None,
        node_cpus: float = 8,
        node_memory: str = "32Gi",
        kind_config: dict | Path | None = None,
    ):
        """kind_config: the kind config the node was created with (or the file `kind create
        cluster --config` will have been given); its extraMounts put node folders on this
        machine, as kind bind-mounts them into the node container."""
        from rayscale import procs

        self.id = secrets.token_hex(3)
        self.docker = docker or procs.tool("docker")
        self.workdir = Path(workdir)
        self.node_dir = (
            self.workdir / "node"
        )  # the kind node's filesystem (hostPath, local-path volumes)
        self.node_dir.mkdir(parents=True, exist_ok=True)
        self.kind_config = kind_config
        self.network = f"kubeemu-{self.id}"
        self.namespaces = set(namespaces)
        self.classes = dict(KIND_CLASSES if classes is None else classes)
        self.default_class = default_class
        self.crd_installed = crd_installed
        # The operator's ENABLE_RANDOM_POD_DELETE: extra pods deleted even with autoscaling.
        self.random_pod_delete = random_pod_delete
        self.allocatable = (float(node_cpus), quantity(node_memory))
        self.objects: dict[tuple[str, str], dict] = {}
        self.rayjobs: dict[tuple[str, str], dict] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.claims: dict[tuple[str, str], dict] = {}
        self.deployments: dict[tuple[str, str], dict] = {}
        self.network_policies: dict[tuple[str, str], dict] = {}
        self.services: dict[tuple[str, str], dict] = {}
        self.cleanup_jobs: dict[tuple[str, str], dict] = {}  # RayCluster -> its Redis cleanup
        self.cleanup_deadline_s = 300.0  # the cleanup Job's activeDeadlineSeconds
        self.finished_cleanups: list[tuple[str, str, str]] = []  # (ns, cluster, Complete|Failed)
        self.cleanup_logs: dict[tuple[str, str], str] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.warnings: list[str] = []
        self.calls: list[tuple] = []
        self.lock = threading.RLock()
        self.version = 0  # the API server's resourceVersion counter
        self.kubelet_backoff_s = 2.0  # between a kubelet's tries at a container it cannot make
        self.slow_pulls: dict[str, float] = {}  # image -> seconds its registry times out first
        self.pull_started: dict[tuple[str, str], float] = {}
        self.events: list[dict] = []  # what the operator records on a RayCluster
        self.writes_after_read: list = []  # another writer's patches, each after the next get
        self.threads: list[threading.Thread] = []
        self.schemas = {
            "rayclusters": crd_schema("ray.io_rayclusters.yaml"),
            "rayjobs": crd_schema("ray.io_rayjobs.yaml"),
        }
        self._docker("network", "create", "--label", f"kubeemu={self.id}", self.network)
        self.custom, self.core, self.storage = _Custom(self), _Core(self), _Storage(self)
        self.apps, self.networking = _Apps(self), _Networking(self)

    @property
    def api(self):
        return (self.custom, self.core, self.storage, self.apps, self.networking)

    def _docker(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        p = subprocess.run([self.docker, *args], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])}: {p.stderr.strip()[-500:]}")
        return p

    # ---- the operator's reconcile loop (run on every API call, as a watch would) ------------

    def _reconcile_workers(self, rc: dict, g: dict, members: list[Pod]) -> None:
        """KubeRay 1.7's reconcilePods for one worker group: the pods named in
        scaleStrategy.workersToDelete go whatever `replicas` says; then pods are made up to
        GetWorkerGroupDesiredReplicas; extra pods are deleted only with autoscaling off
        (or ENABLE_RANDOM_POD_DELETE), else left to the autoscaler."""
        ns, name = rc["metadata"]["namespace"], rc["metadata"]["name"]
        mine = [p for p in members if p.node_type == "worker" and p.group == g["groupName"]]
        doomed = set((g.get("scaleStrategy") or {}).get("workersToDelete") or [])
        for p in mine:
            if p.name in doomed:
                self._delete_pod(p)
                self.events.append(
                    {
                        "namespace": ns,
                        "involvedObject.kind": "RayCluster",
                        "involvedObject.name": name,
                        "type": "Normal",
                        "reason": "DeletedWorkerPod",
                        "message": f"Deleted pod {ns}/{p.name}",
                    }
                )
        running = [p for p in mine if p.name not in doomed]
        diff = desired_replicas(g) - len(running)
        for _ in range(diff):
            self._create_pod(rc, "worker", g, f"{name}-{g['groupName']}-worker-{_suffix()}")
        if diff < 0 and (not rc["spec"].get("enableInTreeAutoscaling") or self.random_pod_delete):
            for p in running[:-diff]:
                self._delete_pod(p)

    def _refused(self, ns: str, name: str) -> bool:
        """KubeRay's ValidateRayClusterMetadata (validation.go): a RayCluster it refuses gets
        a Warning event, once per look here, and no pods."""
        problem = None
        if len(name) > MAX_RAYCLUSTER_NAME:
            problem = f"RayCluster name should be no more than {MAX_RAYCLUSTER_NAME} characters"
        elif not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
            problem = "RayCluster name should be a valid DNS1035 label"
        if problem is None:
            return False
        said = f"The RayCluster metadata is invalid {ns}/{name}: {problem}"
        if not any(e["message"] == said for e in self.events):
            self.events.append(
                {
                    "namespace": ns,
                    "involvedObject.kind": "RayCluster",
                    "involvedObject.name": name,
                    "type": "Warning",
                    "reason": "InvalidRayClusterMetadata",
                    "message": said,
                }
            )
        return True

    def next_version(self) -> str:
        with self.lock:
            self.version += 1
            return str(self.version)

    def reconcile(self) -> None:
        with self.lock:
            for key, job in list(self.rayjobs.items()):
                self._reconcile_rayjob(key, job)
            for key, dep in list(self.deployments.items()):
                self._reconcile_deployment(key, dep)
            for (ns, name), rc in list(self.objects.items()):
                if rc["metadata"].get("deletionTimestamp"):
                    self._finalize(ns, name, rc)
                    continue
                if self._refused(ns, name):
                    continue
                if (rc["spec"].get("gcsFaultToleranceOptions") or {}).get("redisAddress"):
                    fin = rc["metadata"].setdefault("finalizers", [])
                    if REDIS_CLEANUP_FINALIZER not in fin:
                        fin.append(REDIS_CLEANUP_FINALIZER)
                self.secrets.setdefault(
                    (ns, name),
                    {"auth_token": base64.b64encode(secrets.token_hex(32).encode()).decode()},
                )
                members = [
                    p
                    for p in self.pods.values()
                    if p.cluster == name and p.ns == ns and not p.deleting
                ]
                if not any(p.node_type == "head" for p in members):
                    self._create_pod(
                        rc, "head", rc["spec"]["headGroupSpec"], f"{name}-head-{_suffix()}"
                    )
                for g in rc["spec"].get("workerGroupSpecs", []):
                    self._reconcile_workers(rc, g, members)
            for p in list(self.pods.values()):
                owned = p.node_type not in ("deployment", "redis-cleanup")
                if owned and (p.ns, p.cluster) not in self.objects and not p.deleting:
                    self._delete_pod(p)  # owner references: the RayCluster is gone

    def _reconcile_deployment(self, key: tuple[str, str], dep: dict) -> None:
        """A Deployment's ReplicaSet: `replicas` pods from its template, each reached by the
        names of the Services whose selector matches its labels (from when it starts)."""
        ns, name = key
        mine = [
            p for p in self.pods.values()
            if p.ns == ns and p.node_type == "deployment" and p.group == name and not p.deleting
        ]  # fmt: skip
        for _ in range(dep["spec"].get("replicas", 1) - len(mine)):
            manifest = deployment_pod(dep, f"{name}-{secrets.token_hex(5)}-{_suffix()}")
            labels = manifest["metadata"]["labels"]
            aliases = [
                alias
                for (sns, sname), svc in self.services.items()
                if sns == ns
                and all(labels.get(k) == v for k, v in svc["spec"].get("selector", {}).items())
                for alias in (sname, f"{sname}.{ns}", f"{sname}.{ns}.svc",
                              f"{sname}.{ns}.svc.cluster.local")
            ]  # fmt: skip
            self._admit_pod(Pod(manifest, "", "deployment", name, aliases))

    def _finalize(self, ns: str, name: str, rc: dict) -> None:
        """A RayCluster being deleted under KubeRay's Redis cleanup finalizer: its pods go;
        once the head is gone a cleanup Job runs (backoffLimit 0); when it has finished,
        either way, or passed its deadline, the finalizer is removed and the object goes."""
        members = [
            p for p in self.pods.values()
            if p.ns == ns and p.cluster == name and p.node_type in ("head", "worker")
        ]  # fmt: skip
        for p in members:
            if not p.deleting:
                self._delete_pod(p)
        if members:
            return  # "Wait for the head Pod to be terminated before initiating the Redis cleanup"
        job = self.cleanup_jobs.get((ns, name))
        if job is None:
            pod_name = f"{name}-redis-cleanup-{_suffix()}"
            pod = Pod(redis_cleanup_pod(rc, pod_name), name, "redis-cleanup", "headgroup", [])
            self.cleanup_jobs[(ns, name)] = {"pod": pod, "started": time.monotonic()}
            self._event(ns, name, "Normal", "CreatedRedisCleanupJob",
                        f"Created Redis cleanup Job {ns}/{name}-redis-cleanup")  # fmt: skip
            self._admit_pod(pod)
            return
        pod = job["pod"]
        d = self._inspect([pod.containers.get("ray-head", "")]).get(
            pod.containers.get("ray-head", "")
        )
        if d is not None and not d["State"]["Running"] and pod.started_at is not None:
            job["result"] = "Complete" if d["State"]["ExitCode"] == 0 else "Failed"
        elif time.monotonic() - job["started"] > self.cleanup_deadline_s:
            job["result"] = "Failed"  # DeadlineExceeded
        if "result" not in job:
            return
        self._event(ns, name, "Normal", f"RedisCleanupJob{job['result']}",
                    f"Redis cleanup Job {ns}/{name}-redis-cleanup: {job['result']}")  # fmt: skip
        said = self._docker(
            "logs", "--tail", "20", pod.containers.get("ray-head", "-"), check=False
        )
        self.cleanup_logs[(ns, name)] = said.stdout + said.stderr
        self._delete_pod(pod)
        self.finished_cleanups.append((ns, name, job["result"]))
        del self.cleanup_jobs[(ns, name)]
        self.objects.pop((ns, name), None)
        self.secrets.pop((ns, name), None)

    def _event(self, ns: str, name: str, type_: str, reason: str, message: str) -> None:
        self.events.append(
            {
                "namespace": ns,
                "involvedObject.kind": "RayCluster",
                "involvedObject.name": name,
                "type": type_,
                "reason": reason,
                "message": message,
            }
        )

    # ---- RayJob (K8sJobMode) ----------------------------------------------------------------

    def _reconcile_rayjob(self, key: tuple[str, str], job: dict) -> None:
        ns, name = key
        spec, st = job["spec"], job.setdefault("status", {})
        if not st.get("rayClusterName"):
            if spec.get("rayClusterSpec"):
                cname = f"{name}-{_suffix()}"
                self.objects[(ns, cname)] = {
                    "apiVersion": "ray.io/v1",
                    "kind": "RayCluster",
                    "metadata": {
                        "name": cname,
                        "namespace": ns,
                        "uid": secrets.token_hex(8),
                        "generation": 1,
                        "labels": {"ray.io/originated-from-cr-name": name},
                        "ownerReferences": [
                            {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": name}
                        ],
                    },
                    "spec": copy.deepcopy(spec["rayClusterSpec"]),
                }
            else:
                cname = spec["clusterSelector"]["ray.io/cluster"]
            st.update(
                rayClusterName=cname,
                jobId=f"{name}-{_suffix()}",
                jobDeploymentStatus="Initializing",
                dashboardURL=f"{cname}-head-svc.{ns}.svc.cluster.local:8265",
            )
        cname = st["rayClusterName"]
        rc = self.objects.get((ns, cname))
        if (
            st["jobDeploymentStatus"] == "Initializing"
            and rc is not None
            and self._cluster_ready(ns, cname, rc)
        ):
            self._create_submitter(ns, name, job, rc)
            st["jobDeploymentStatus"] = "Running"
        elif st["jobDeploymentStatus"] == "Running":
            sub = self.pods.get((ns, st["submitter"]))
            info = self._inspect([sub.containers.get("ray-job-submitter", "")]) if sub else {}
            d = next(iter(info.values()), None)
            if d is not None and not d["State"]["Running"]:
                st["jobStatus"] = self._dashboard_job_status(ns, cname, st["jobId"])
                st["jobDeploymentStatus"] = (
                    "Complete"
                    if st["jobStatus"] in ("SUCCEEDED", "FAILED", "STOPPED")
                    else "Failed"
                )
                st["endTime"] = time.monotonic()
        elif (
            st["jobDeploymentStatus"] in ("Complete", "Failed")
            and spec.get("shutdownAfterJobFinishes")
            and rc is not None
            and time.monotonic() - st["endTime"] >= spec.get("ttlSecondsAfterFinished", 0)
        ):
            self._delete_cluster(ns, cname)

    def _cluster_ready(self, ns: str, cname: str, rc: dict) -> bool:
        """KubeRay's RayCluster state "ready": every Ray pod running and ready."""
        pods = [
            p
            for p in self.pods.values()
            if p.ns == ns
            and p.cluster == cname
            and not p.deleting
            and p.node_type in ("head", "worker")
        ]
        want = 1 + sum(g.get("replicas", 0) for g in rc["spec"].get("workerGroupSpecs", []))
        if len(pods) < want:
            return False
        info = self._inspect([n for p in pods for n in p.containers.values()])
        statuses = [self.pod_model(p, info).status.container_statuses for p in pods]
        return all(st and st[0].ready for st in statuses)

    def _create_submitter(self, ns: str, name: str, job: dict, rc: dict) -> None:
        st = job["status"]
        address = f"http://{st['dashboardURL']}"
        health = (
            f"python -c \"import urllib.request; r=urllib.request.urlopen('{address}/api/gcs_healthz', "
            f"timeout=10); exit(0 if b'success' in r.read() else 1)\""
        )
        cmd = (
            f'until {health} >/dev/null 2>&1 ; do echo "Waiting for Ray Dashboard GCS to become healthy at '
            f'{address} ..." ; sleep 2 ; done ; if ! ray job status --address {address} {st["jobId"]} '
            f">/dev/null 2>&1 ; then ray job submit --address {address} --no-wait --submission-id "
            f"{st['jobId']} -- {job['spec']['entrypoint'].strip()} ; fi ; "
            f"ray job logs --address {address} --follow {st['jobId']}"
        )
        head = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        container = {
            "name": "ray-job-submitter",
            "image": head["image"],
            "resources": {
                "limits": {"cpu": "1", "memory": "1Gi"},
                "requests": {"cpu": "500m", "memory": "200Mi"},
            },
            "command": ["/bin/bash", "-ce", "--"],
            "args": [cmd],
            "env": [
                {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "RAY_DASHBOARD_ADDRESS", "value": st["dashboardURL"]},
                {"name": "RAY_JOB_SUBMISSION_ID", "value": st["jobId"]},
                *_token_env(rc["metadata"]["name"], rc["spec"].get("authOptions")),
            ],
        }
        pod_name = f"{name}-{_suffix()}"
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": ns,
                "annotations": {},
                "labels": {"ray.io/originated-from-cr-name": name, "job-name": name},
            },
            "spec": {"containers": [container], "restartPolicy": "Never"},
        }
        self._admit_pod(Pod(manifest, rc["metadata"]["name"], "submitter", "", []))
        st["submitter"] = pod_name

    def _dashboard_job_status(self, ns: str, cname: str, job_id: str) -> str:
        token = base64.b64decode(self.secrets[(ns, cname)]["auth_token"]).decode()
        req = urllib.request.Request(
            f"http://{self.head_address(ns, cname)}/api/jobs/{job_id}",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.load(r)["status"]
        except OSError:
            return "UNKNOWN"

    def submitter_logs(self, ns: str, job: str) -> str:
        pod = self.pods.get((ns, self.rayjobs[(ns, job)]["status"].get("submitter", "")))
        if pod is None:
            return ""
        return self._docker("logs", pod.containers["ray-job-submitter"], check=False).stdout

    def _create_pod(self, rc: dict, node_type: str, group: dict, pod_name: str) -> None:
        manifest = build_pod(rc, node_type, group, pod_name)
        name, ns = rc["metadata"]["name"], rc["metadata"]["namespace"]
        svc = f"{name}-head-svc"
        aliases = (
            [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]
            if node_type == "head"
            else []
        )
        self._admit_pod(
            Pod(
                manifest,
                name,
                node_type,
                "headgroup" if node_type == "head" else group["groupName"],
                aliases,
            )
        )

    def _admit_pod(self, pod: Pod) -> None:
        """A new pod: the API records it, the kubelet starts running it."""
        self.pods[(pod.ns, pod.name)] = pod
        self._background(self._run_pod, pod)

    def _background(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        self.threads.append(t)  # shutdown() joins them
        t.start()

    def _delete_cluster(self, ns: str, name: str) -> None:
        """A RayCluster goes, and the token Secret it owns with it (its pods follow in
        reconcile); one with finalizers is marked for deletion and held until they go."""
        rc = self.objects.get((ns, name))
        if rc is not None and rc["metadata"].get("finalizers"):
            rc["metadata"].setdefault(
                "deletionTimestamp", datetime.datetime.now(datetime.UTC).isoformat()
            )
            return
        self.objects.pop((ns, name), None)
        self.secrets.pop((ns, name), None)

    def replace_ended(self, pods: list[Pod], info: dict[str, dict]) -> None:
        """KubeRay's shouldDeletePod: a pod whose Ray container ended cannot restart under
        restartPolicy Never, so the operator deletes it, with an event on the RayCluster,
        and makes a new one in the next reconcile."""
        with self.lock:
            for pod in pods:
                self._replace_if_ended(pod, info)

    def _replace_if_ended(self, pod: Pod, info: dict[str, dict]) -> None:
        ray_name = pod.manifest["spec"]["containers"][0]["name"]
        d = info.get(pod.containers.get(ray_name, ""))
        if pod.node_type not in ("head", "worker"):  # a RayJob's submitter is a Job's pod
            return
        if pod.deleting or d is None or d["State"]["Running"]:
            return
        if (pod.ns, pod.cluster) not in self.objects:
            return
        code = d["State"]["ExitCode"]
        phase = "Succeeded" if code == 0 else "Failed"
        kind = "Head" if pod.node_type == "head" else "Worker"
        self.events.append(
            {
                "namespace": pod.ns,
                "involvedObject.kind": "RayCluster",
                "involvedObject.name": pod.cluster,
                "type": "Normal",
                "reason": f"Deleted{kind}Pod",
                "message": f"Deleted {kind.lower()} Pod {pod.ns}/{pod.name}; Pod status: {phase}; "
                f"Pod restart policy: Never; Ray container terminated status: "
                f"&ContainerStateTerminated{{ExitCode:{code},Reason:"
                f"{'Completed' if code == 0 else 'Error'}}}",
            }
        )
        # The pod lingers while its other containers (the autoscaler) take SIGTERM.
        self._delete_pod(pod, linger_s=2.0)

    def _delete_pod(self, pod: Pod, linger_s: float = 0.0) -> None:
        pod.deleting = True
        grace = pod.manifest["spec"].get("terminationGracePeriodSeconds", 30)

        def stop():
            time.sleep(linger_s)
            with self.lock:
                names = list(pod.containers.values())
            if names:
                self._docker("stop", "-t", str(grace), *names, check=False, timeout=grace + 60)
                self._docker("rm", "-f", *names, check=False)
            with self.lock:
                self.pods.pop((pod.ns, pod.name), None)

        self._background(stop)

    # ---- the kubelet ------------------------------------------------------------------------

    def _requests(self, pod: Pod) -> tuple[float, float]:
        def req(c):
            r = (
                (c.get("resources") or {}).get("requests")
                or (c.get("resources") or {}).get("limits")
                or {}
            )
            return quantity(r.get("cpu", 0)), quantity(r.get("memory", 0))

        spec = pod.manifest["spec"]
        main = [req(c) for c in spec["containers"]]
        init = [req(c) for c in spec.get("initContainers", [])]
        cpu, mem = sum(c for c, _ in main), sum(m for _, m in main)
        return max([cpu, *(c for c, _ in init)]), max([mem, *(m for _, m in init)])

    def _schedule(self, pod: Pod) -> None:
        with self.lock:
            placed = [
                p for p in self.pods.values() if p is not pod and p.scheduled and not p.deleting
            ]
            cpu, mem = self._requests(pod)
            used_cpu = sum(self._requests(p)[0] for p in placed)
            used_mem = sum(self._requests(p)[1] for p in placed)
            short = [
                what
                for what, need, have in (
                    ("cpu", used_cpu + cpu, self.allocatable[0]),
                    ("memory", used_mem + mem, self.allocatable[1]),
                )
                if need > have
            ]
            if short:
                raise _Pending(
                    "0/1 nodes are available: "
                    + ", ".join(f"1 Insufficient {w}" for w in short)
                    + "."
                )
            pod.scheduled = True

    def _run_pod(self, pod: Pod) -> None:
        spec = pod.manifest["spec"]
        try:
            self._schedule(pod)
            volumes = self._volumes(pod)
        except _Pending as e:
            pod.unschedulable = str(e)
            return
        for c in spec.get("initContainers", []):
            if pod.deleting:
                return
            pod.init[c["name"]] = {"state": "running"}
            args = self._retried(pod, lambda c=c: self._run_args(pod, c, volumes, f"init-{c['name']}"),
                                 lambda c=c: pod.init.__setitem__(c["name"], {"state": "waiting"}))  # fmt: skip
            if args is None:
                return
            pod.init[c["name"]] = {"state": "running"}
            rc = self._docker(*args, check=False, timeout=3600).returncode
            self._docker("rm", "-f", pod.containers[c["name"]], check=False)
            pod.init[c["name"]] = {"state": "terminated", "code": rc}
            if rc != 0:
                return
        ray = spec["containers"][0]  # the autoscaler sidecar needs an API server: not started
        args = self._retried(pod, lambda: self._run_args(pod, ray, volumes, "ray", detach=True))
        if args is None or pod.deleting:
            return
        self._docker(*args)
        pod.started_at = time.monotonic()

    def _retried(self, pod: Pod, attempt, waiting=None):
        """The kubelet's retries: a container that cannot be created yet (its image not
        pulled, a Secret not there yet) is tried again after a back-off (10 s doubling to
        5 min on a kubelet; `kubelet_backoff_s` here) until it can be or the pod goes."""
        while not pod.deleting:
            args = attempt()
            if args is not None:
                pod.waiting = None
                return args
            if waiting:
                waiting()
            if pod.waiting and pod.waiting[0] == "ErrImagePull":
                time.sleep(1.0)  # the failed pull's words, then the back-off's
                image = pod.waiting[2] if len(pod.waiting) > 2 else ""
                pod.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
            time.sleep(self.kubelet_backoff_s)
        return None

    def _image_ok(self, pod: Pod, c: dict) -> bool:
        image = c["image"]
        here = self._docker("image", "inspect", image, check=False).returncode == 0
        slow = self.slow_pulls.get(image)
        if here and not slow:
            return True
        if c.get("imagePullPolicy") == "Never" and not here:
            pod.waiting = (
                "ErrImageNeverPull",
                f'Container image "{image}" is not present with pull policy of Never',
            )
            return False
        ref = image if "/" in image else f"docker.io/library/{image}"
        if here:  # a registry that times out a while, then serves the image
            started = self.pull_started.setdefault((pod.ns, pod.name), time.monotonic())
            if time.monotonic() - started >= slow:
                return True
            cause = (
                "failed to copy: httpReadSeeker: failed open: dial tcp 104.16.0.1:443: i/o timeout"
            )
        else:  # no registry has it: containerd's words for docker.io
            cause = (
                f'failed to resolve reference "{ref}": pull access denied, repository does not '
                "exist or may require authorization: server message: insufficient_scope: "
                "authorization failed"
            )
        pod.waiting = (
            "ErrImagePull",
            f'rpc error: code = Unknown desc = failed to pull and unpack image "{ref}": {cause}',
            image,
        )
        return False

    def _env(self, pod: Pod, c: dict) -> list[str] | None:
        out = []
        meta = pod.manifest["metadata"]
        for e in c.get("env", []):
            if "value" in e:
                out.append(f"{e['name']}={e['value']}")
                continue
            src = e.get("valueFrom", {})
            if "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                data = self.secrets.get((pod.ns, ref["name"]))
                if data is None or ref["key"] not in data:
                    pod.waiting = (
                        "CreateContainerConfigError",
                        f'secret "{ref["name"]}" not found',
                    )
                    return None
                out.append(f"{e['name']}={base64.b64decode(data[ref['key']]).decode()}")
            elif "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                if path.startswith("metadata.labels['"):
                    value = meta["labels"].get(path[len("metadata.labels['") : -2], "")
                else:
                    value = {
                        "metadata.name": meta["name"],
                        "metadata.namespace": meta["namespace"],
                    }[path]
                out.append(f"{e['name']}={value}")
        return out

    def _volumes(self, pod: Pod) -> dict[str, list[str]]:
        """Docker mount options for each of the pod's volumes, made as the kubelet makes them."""
        spec = pod.manifest["spec"]
        out: dict[str, Any] = {}
        base = self.workdir / "pods" / pod.name
        for v in spec.get("volumes", []):
            name = v["name"]
            if "emptyDir" in v:
                if v["emptyDir"].get("medium") == "Memory":
                    out[name] = ("tmpfs", v["emptyDir"].get("sizeLimit"))
                else:
                    d = base / name
                    d.mkdir(parents=True, exist_ok=True)
                    os.chmod(d, 0o777)  # the kubelet makes emptyDir world-writable
                    out[name] = ("bind", str(d))
            elif "hostPath" in v:
                d = self.node_path(v["hostPath"]["path"])
                if v["hostPath"].get("type") == "DirectoryOrCreate" and not d.exists():
                    d.mkdir(parents=True)
                    os.chown(d, 0, 0)
                    os.chmod(
                        d, 0o755
                    )  # as the kubelet makes it; fsGroup does not apply to hostPath
                out[name] = ("bind", str(d))
            elif "persistentVolumeClaim" in v:
                out[name] = (
                    "bind",
                    self._bind_claim(pod.ns, v["persistentVolumeClaim"]["claimName"]),
                )
            elif "projected" in v:  # a service-account token: files, as the kubelet writes them
                d = base / name
                d.mkdir(parents=True, exist_ok=True)
                for src in v["projected"]["sources"]:
                    if "serviceAccountToken" in src:
                        (d / src["serviceAccountToken"]["path"]).write_text("emulated-token")
                    for item in (src.get("downwardAPI") or {}).get("items", []):
                        (d / item["path"]).write_text(pod.ns)
                    for item in (src.get("configMap") or {}).get("items", []):
                        (d / item["path"]).write_text("")
                out[name] = ("bind", str(d))
            else:
                raise RuntimeError(f"the emulator does not support volume {v}")
        return out

    @property
    def mounts(self) -> dict[str, Path]:
        cfg = self.kind_config
        if isinstance(cfg, Path):
            cfg = yaml.safe_load(cfg.read_text()) if cfg.exists() else None
        nodes = (cfg or {}).get("nodes") or [{}]
        return {m["containerPath"]: Path(m["hostPath"]) for m in nodes[0].get("extraMounts", [])}

    def node_path(self, path: str) -> Path:
        """A path in the node's filesystem, on this machine: under an extraMount's host
        folder where one covers it, else in the node container's own filesystem."""
        for inside, host in self.mounts.items():
            if path == inside or path.startswith(inside.rstrip("/") + "/"):
                return host / path[len(inside) :].lstrip("/")
        return self.node_dir / path.lstrip("/")

    def delete_node(self) -> None:
        """`kind delete cluster`: the node container goes, and its filesystem with it;
        the host folders mounted into it stay."""
        self.shutdown()
        shutil.rmtree(self.node_dir, ignore_errors=True)

    def _bind_claim(self, ns: str, claim_name: str) -> str:
        with self.lock:
            claim = self.claims.get((ns, claim_name))
            if claim is None:
                raise _Pending(f'persistentvolumeclaim "{claim_name}" not found')
            if claim["status"]["phase"] != "Bound":
                cls = claim["spec"].get("storageClassName") or self.default_class
                if cls not in self.classes:
                    raise _Pending(
                        "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims"
                    )
                provisioner, _ = self.classes[cls]
                if (
                    "ReadWriteMany" in claim["spec"]["accessModes"]
                    and provisioner not in RWX_PROVISIONERS
                ):
                    raise _Pending(
                        f'running PreBind plugin "VolumeBinding": failed to provision volume with '
                        f'StorageClass "{cls}": {provisioner} does not support ReadWriteMany'
                    )
                # local-path's folder for a claim: <nodePath>/pvc-<uid>_<namespace>_<name>
                d = self.node_path(
                    f"{LOCAL_PATH_DIR}/pvc-{claim['metadata']['uid']}_{ns}_{claim_name}"
                )
                d.mkdir(parents=True, exist_ok=True)
                if provisioner in ROOT_OWNED:
                    os.chown(d, 0, 0)
                    os.chmod(d, 0o755)
                else:
                    os.chmod(d, 0o777)  # local-path's setup script: mkdir -m 0777
                claim["status"] = {"phase": "Bound", "path": str(d)}
            return claim["status"]["path"]

    def _run_args(
        self, pod: Pod, c: dict, volumes: dict, suffix: str, detach: bool = False
    ) -> list[str] | None:
        if not self._image_ok(pod, c):
            return None
        env = self._env(pod, c)
        if env is None:
            return None
        pod_sc = pod.manifest["spec"].get("securityContext") or {}
        sc = {
            **{k: v for k, v in pod_sc.items() if k in ("runAsUser", "runAsGroup", "runAsNonRoot")},
            **(c.get("securityContext") or {}),
        }
        uid = sc.get("runAsUser")
        if uid is None:
            user = self._docker(
                "image", "inspect", "-f", "{{.Config.User}}", c["image"]
            ).stdout.strip()
            uid = (
                int(user.split(":")[0])
                if user.split(":")[0].isdigit()
                else (0 if not user else None)
            )
        if sc.get("runAsNonRoot") and uid in (0, None):
            pod.waiting = (
                "CreateContainerConfigError",
                "container has runAsNonRoot and image will run as root"
                if uid == 0
                else "container has runAsNonRoot and image has non-numeric user, cannot verify user is non-root",
            )
            return None
        name = f"kubeemu-{self.id}-{pod.name}-{suffix}"[:120]
        pod.containers[c["name"]] = name
        args = [
            "run",
            "--name",
            name,
            "--hostname",
            pod.name,
            "--network",
            self.network,
            "--label",
            f"kubeemu={self.id}",
            "--user",
            f"{uid}:{sc.get('runAsGroup', 0)}",
        ]
        if detach:
            args.insert(1, "-d")
        for a in pod.aliases:
            args += ["--network-alias", a]
        for g in [pod_sc.get("fsGroup"), *(pod_sc.get("supplementalGroups") or [])]:
            if g is not None:
                args += ["--group-add", str(g)]
        caps = sc.get("capabilities") or {}
        args += [f"--cap-drop={x}" for x in caps.get("drop", [])] + [
            f"--cap-add={x}" for x in caps.get("add", [])
        ]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if sc.get("privileged"):
            args.append("--privileged")
        limits = (c.get("resources") or {}).get("limits") or {}
        if "cpu" in limits:
            args.append(f"--cpus={min(quantity(limits['cpu']), os.cpu_count() or 1):g}")
        if "memory" in limits:
            args.append(f"--memory={int(quantity(limits['memory']))}")
        for m in c.get("volumeMounts", []):
            kind, src = volumes[m["name"]]
            ro = ",readonly" if m.get("readOnly") else ""
            if kind == "tmpfs":
                size = int(quantity(src or limits.get("memory") or "64Mi"))
                if m["mountPath"] == "/dev/shm":
                    args.append(f"--shm-size={size}")
                else:
                    args += [
                        "--mount",
                        f"type=tmpfs,destination={m['mountPath']},tmpfs-size={size},tmpfs-mode=1777",
                    ]
            else:
                path = os.path.join(src, m["subPath"]) if m.get("subPath") else src
                args += ["--mount", f"type=bind,source={path},destination={m['mountPath']}{ro}"]
        for e in env:
            args += ["-e", e]
        command = c.get("command") or []
        if command:
            args += ["--entrypoint", command[0]]
        return [*args, c["image"], *command[1:], *(c.get("args") or [])]

    # ---- what the API reports about a pod ----------------------------------------------------

    def _inspect(self, names: list[str]) -> dict[str, dict]:
        if not names:
            return {}
        p = self._docker("inspect", *names, check=False)
        return {d["Name"].lstrip("/"): d for d in json.loads(p.stdout or "[]")}

    def pod_model(self, pod: Pod, info: dict[str, dict]) -> client.V1Pod:
        cstate = client.V1ContainerState
        inits = [
            client.V1ContainerStatus(
                name=n,
                ready=False,
                restart_count=0,
                image="",
                image_id="",
                state=cstate(running=client.V1ContainerStateRunning())
                if s["state"] == "running"
                else cstate(
                    terminated=client.V1ContainerStateTerminated(
                        exit_code=s["code"], reason="Completed" if s["code"] == 0 else "Error"
                    )
                )
                if s["state"] == "terminated"
                else cstate(
                    waiting=client.V1ContainerStateWaiting(
                        reason=pod.waiting[0] if pod.waiting else "PodInitializing",
                        message=pod.waiting[1] if pod.waiting else None,
                    )
                ),
            )
            for n, s in pod.init.items()
        ]
        ray_name = pod.manifest["spec"]["containers"][0]["name"]
        d = info.get(pod.containers.get(ray_name, ""))
        ip, phase, ready = None, "Pending", False
        if d is not None:
            st = d["State"]
            ip = next(iter(d["NetworkSettings"]["Networks"].values()))["IPAddress"] or None
            if st["Running"]:
                phase = "Running"
                state = cstate(running=client.V1ContainerStateRunning())
                ready = self._probe(pod, ip)
            else:
                phase = "Succeeded" if st["ExitCode"] == 0 else "Failed"
                state = cstate(
                    terminated=client.V1ContainerStateTerminated(
                        exit_code=st["ExitCode"],
                        reason="OOMKilled"
                        if st["OOMKilled"]
                        else ("Completed" if st["ExitCode"] == 0 else "Error"),
                    )
                )
        elif pod.waiting and not pod.init.get("wait-gcs-ready", {}).get("state") == "waiting":
            state = cstate(
                waiting=client.V1ContainerStateWaiting(
                    reason=pod.waiting[0], message=pod.waiting[1]
                )
            )
        else:
            state = cstate(
                waiting=client.V1ContainerStateWaiting(
                    reason="PodInitializing" if pod.init else "ContainerCreating"
                )
            )
        statuses = [
            client.V1ContainerStatus(
                name=ray_name, ready=ready, restart_count=0, image="", image_id="", state=state
            )
        ]
        conds = [client.V1PodCondition(type="PodScheduled", status="True")]
        if pod.unschedulable:
            conds = [
                client.V1PodCondition(
                    type="PodScheduled",
                    status="False",
                    reason="Unschedulable",
                    message=pod.unschedulable,
                )
            ]
            statuses, inits = None, None
        conds.append(client.V1PodCondition(type="Ready", status="True" if ready else "False"))
        meta = pod.manifest["metadata"]
        return client.V1Pod(
            metadata=client.V1ObjectMeta(
                name=pod.name,
                namespace=pod.ns,
                labels=dict(meta["labels"]),
                creation_timestamp=pod.created,
                deletion_timestamp=pod.created if pod.deleting else None,
            ),
            spec=client.V1PodSpec(
                containers=[
                    client.V1Container(name=c["name"], image=c["image"])
                    for c in pod.manifest["spec"]["containers"]
                ]
            ),
            status=client.V1PodStatus(
                phase=phase,
                pod_ip=ip,
                conditions=conds,
                container_statuses=statuses,
                init_container_statuses=inits or None,
            ),
        )

    def _probe(self, pod: Pod, ip: str | None) -> bool:
        """The readiness probe KubeRay sets: an HTTP GET on the node's agent, after its delay."""
        probe = pod.manifest["spec"]["containers"][0].get("readinessProbe")
        if not ip or pod.started_at is None:
            return False
        if not probe:  # no probe: ready once running
            return True
        now = time.monotonic()
        if now - pod.started_at < probe.get("initialDelaySeconds", 0):
            return False
        if pod.ready and now - pod.last_probe < probe.get("periodSeconds", 10):
            return True
        pod.last_probe = now
        get = probe.get("httpGet") or {}
        try:
            if "tcpSocket" in probe:
                socket.create_connection(
                    (ip, probe["tcpSocket"]["port"]), timeout=probe.get("timeoutSeconds", 1)
                ).close()
                pod.ready = True
            else:
                with urllib.request.urlopen(
                    f"http://{ip}:{get.get('port')}{get.get('path')}",
                    timeout=probe.get("timeoutSeconds", 1),
                ) as r:
                    pod.ready = r.status == 200
        except OSError:
            pod.ready = False
        self._liveness(pod, pod.ready, now)
        return pod.ready

    def _liveness(self, pod: Pod, ok: bool, now: float) -> None:
        """The kubelet's liveness probe (the same GET): after failureThreshold failures in a
        row it kills the container, which under restartPolicy Never ends the pod."""
        live = pod.manifest["spec"]["containers"][0].get("livenessProbe")
        if not live or now - pod.started_at < live.get("initialDelaySeconds", 0):
            return
        pod.live_failures = 0 if ok else pod.live_failures + 1
        if pod.live_failures >= live.get("failureThreshold", 3):
            ray_name = pod.manifest["spec"]["containers"][0]["name"]
            self._docker("kill", pod.containers.get(ray_name, ""), check=False)

    # ---- for tests ---------------------------------------------------------------------------

    def head_address(self, ns: str, name: str, port: int = 8265) -> str:
        """host:port behind svc/<name>-head-svc (the port-forward stand-in's target)."""
        with self.lock:
            head = next(
                (
                    p
                    for p in self.pods.values()
                    if p.ns == ns and p.cluster == name and p.node_type == "head" and not p.deleting
                ),
                None,
            )
        if head is None:
            return ""
        d = self._inspect([head.containers.get("ray-head", "")]).get(
            head.containers.get("ray-head", "")
        )
        ip = next(iter(d["NetworkSettings"]["Networks"].values()))["IPAddress"] if d else ""
        return f"{ip}:{port}" if ip else ""

    def exec(self, pod_name: str, ns: str, *cmd: str) -> subprocess.CompletedProcess:
        """`kubectl exec` into a pod's Ray container (as the container's user)."""
        pod = self.pods[(ns, pod_name)]
        return self._docker(
            "exec", pod.containers[pod.manifest["spec"]["containers"][0]["name"]], *cmd, check=False
        )

    def operator_pass(self, ns: str) -> None:
        """What the operator does on a pod event: replace pods whose Ray container ended,
        then reconcile. The real one is woken by the watch; the emulator when anyone looks."""
        with self.lock:
            pods = [p for p in self.pods.values() if p.ns == ns]
        self.replace_ended(pods, self._inspect([n for p in pods for n in p.containers.values()]))
        self.reconcile()

    def pod_names(self, ns: str, cluster: str, node_type: str | None = None) -> list[str]:
        self.operator_pass(ns)
        with self.lock:
            return [
                p.name
                for p in self.pods.values()
                if p.ns == ns
                and p.cluster == cluster
                and not p.deleting
                and (node_type is None or p.node_type == node_type)
            ]

    def leftovers(self) -> list[str]:
        out = []
        for what in (["ps", "-aq"], ["network", "ls", "-q"]):
            out += self._docker(
                *what, "--filter", f"label=kubeemu={self.id}", check=False
            ).stdout.split()
        return out

    def shutdown(self) -> None:
        with self.lock:
            self.objects.clear()
            names = [n for p in self.pods.values() for n in p.containers.values()]
            for p in self.pods.values():
                p.deleting = True
        ids = self._docker(
            "ps", "-aq", "--filter", f"label=kubeemu={self.id}", check=False
        ).stdout.split()
        if ids or names:
            self._docker("rm", "-f", *ids, check=False, timeout=120)
        for t in self.threads:
            t.join(timeout=60)
        ids = self._docker(
            "ps", "-aq", "--filter", f"label=kubeemu={self.id}", check=False
        ).stdout.split()
        if ids:  # an init container started while we stopped the others
            self._docker("rm", "-f", *ids, check=False, timeout=120)
        self._docker("network", "rm", self.network, check=False)


class _Pending(Exception):
    """The scheduler cannot place the pod (its message is the PodScheduled condition's)."""


def desired_replicas(g: dict) -> int:
    """KubeRay's GetWorkerGroupDesiredReplicas (utils/util.go): replicas held within
    [minReplicas, maxReplicas], 0 when suspended, times numOfHosts."""
    if g.get("suspend"):
        return 0
    lo, hi = g.get("minReplicas", 0), g.get("maxReplicas", 2**31 - 1)
    r = g.get("replicas")
    n = lo if r is None or r < lo else min(r, hi)
    return n * max(1, g.get("numOfHosts", 1))


def _suffix() -> str:
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


# ---- the API ----------------------------------------------------------------------------------


class _Custom:
    def __init__(self, k: KubeEmulator):
        self.k = k

    def _store(self, plural) -> dict:
        return self.k.objects if plural == "rayclusters" else self.k.rayjobs

    def _check(self, group, version, namespace, plural, verb="get", name=""):
        """What the API server checks before the object: the resource type, RBAC, and, for
        a create only, the namespace (a read in a missing one is just not found)."""
        if (
            not self.k.crd_installed
            or (group, version) != ("ray.io", "v1")
            or plural not in self.k.schemas
        ):
            raise api_error(404, "Not Found", "the server could not find the requested resource")
        if (verb, plural) in getattr(self.k, "forbidden", ()):
            what = (
                f'{plural}.{group} "{name}" is forbidden'
                if name
                else f"{plural}.{group} is forbidden"
            )
            raise api_error(
                403,
                "Forbidden",
                f'{what}: User "system:serviceaccount:ml:rayscale" cannot {verb} resource '
                f'"{plural}" in API group "{group}" in the namespace "{namespace}"',
            )
        if verb == "create" and namespace not in self.k.namespaces:
            raise api_error(
                404,
                "Not Found",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )

    def _admit(self, body: dict, plural: str = "rayclusters") -> dict:
        import jsonschema

        schema = self.k.schemas[plural]
        obj = copy.deepcopy(body)
        dropped: list[str] = []
        prune(obj, schema, "", dropped)
        self.k.warnings += [f'unknown field "{d.lstrip(".")}"' for d in dropped]
        try:
            jsonschema.validate(obj, schema)
        except jsonschema.ValidationError as e:
            raise api_error(
                422, "Unprocessable Entity", f"{body.get('kind')} is invalid: {e.message}"
            ) from None
        return obj

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        name = body["metadata"]["name"]
        self.k.calls.append(("create", namespace, name))
        self._check(group, version, namespace, plural, "create", name)
        with self.k.lock:
            store = self._store(plural)
            if (namespace, name) in store:
                raise api_error(409, "Conflict", f'{plural}.ray.io "{name}" already exists')
            obj = self._admit(body, plural)
            obj["metadata"].update(
                namespace=namespace,
                uid=secrets.token_hex(8),
                generation=1,
                resourceVersion=self.k.next_version(),
            )
            store[(namespace, name)] = obj
        self.k.reconcile()
        return copy.deepcopy(obj)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.k.calls.append(("get", namespace, name))
        self._check(group, version, namespace, plural, "get", name)
        self.k.reconcile()
        store = self._store(plural)
        if (namespace, name) not in store:
            raise api_error(404, "Not Found", f'{plural}.ray.io "{name}" not found')
        out = copy.deepcopy(store[(namespace, name)])
        if getattr(self.k, "writes_after_read", None):  # a second writer, racing this read
            self.k.writes_after_read.pop(0)(self)
        return out

    def list_cluster_custom_object(self, group, version, plural):
        """Every namespace's objects, as the API server lists them (cluster-wide read)."""
        self.k.calls.append(("list", "*", plural))
        self.k.reconcile()
        with self.k.lock:
            return {"items": [copy.deepcopy(o) for o in self._store(plural).values()]}

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.k.calls.append(("patch", namespace, name, copy.deepcopy(body)))
        self._check(group, version, namespace, plural, "patch", name)
        with self.k.lock:
            obj = self.k.objects.get((namespace, name))
            if obj is None:
                raise api_error(404, "Not Found", f'rayclusters.ray.io "{name}" not found')
            # The API server's optimistic concurrency: a patch made from an older version
            # of the object is refused whole.
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if sent is not None and sent != obj["metadata"]["resourceVersion"]:
                raise api_error(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on rayclusters.ray.io "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try again",
                )
            merged = self._admit(
                _merge(copy.deepcopy(obj), body)
            )  # merge patch: lists replaced whole
            merged["metadata"]["generation"] += 1
            merged["metadata"]["resourceVersion"] = self.k.next_version()
            self.k.objects[(namespace, name)] = merged
        self.k.reconcile()
        return copy.deepcopy(merged)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.k.calls.append(("delete", namespace, name))
        self._check(group, version, namespace, plural, "delete", name)
        with self.k.lock:
            if (namespace, name) not in self._store(plural):
                raise api_error(404, "Not Found", f'{plural}.ray.io "{name}" not found')
            if plural == "rayjobs":  # owner references: its own cluster goes with it
                for (ns, cname), rc in list(self.k.objects.items()):
                    owners = rc["metadata"].get("ownerReferences") or []
                    if ns == namespace and any(
                        o["kind"] == "RayJob" and o["name"] == name for o in owners
                    ):
                        self.k._delete_cluster(ns, cname)
                for p in list(self.k.pods.values()):
                    if (
                        p.node_type == "submitter"
                        and p.manifest["metadata"]["labels"].get("job-name") == name
                    ):
                        self.k._delete_pod(p)
                del self.k.rayjobs[(namespace, name)]
            else:
                self.k._delete_cluster(namespace, name)
        self.k.reconcile()
        return {"kind": "Status", "status": "Success"}


class _Core:
    def __init__(self, k: KubeEmulator):
        self.k = k

    def _ns(self, namespace):
        """A create in a namespace that does not exist (reads there find nothing, as on a
        real API server)."""
        if namespace not in self.k.namespaces:
            raise api_error(
                404,
                "Not Found",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )

    def list_namespaced_pod(self, namespace, label_selector=""):
        self.k.reconcile()
        want = dict(kv.split("=", 1) for kv in label_selector.split(",") if kv)
        with self.k.lock:
            pods = [
                p
                for p in self.k.pods.values()
                if p.ns == namespace
                and all(p.manifest["metadata"]["labels"].get(k) == v for k, v in want.items())
            ]
        info = self.k._inspect([n for p in pods for n in p.containers.values()])
        self.k.replace_ended(pods, info)
        return client.V1PodList(items=[self.k.pod_model(p, info) for p in pods])

    def read_namespaced_pod_log(self, name, namespace, container=None, tail_lines=None):
        with self.k.lock:
            pod = self.k.pods.get((namespace, name))
            docker_name = pod and pod.containers.get(
                container or pod.manifest["spec"]["containers"][0]["name"]
            )
        if not docker_name:
            raise api_error(404, "Not Found", f'pods "{name}" not found')
        args = ["logs", *(["--tail", str(tail_lines)] if tail_lines else []), docker_name]
        p = self.k._docker(*args, check=False)
        if p.returncode != 0:
            raise api_error(404, "Not Found", f'pods "{name}" not found')
        return p.stdout + p.stderr

    def list_namespaced_event(self, namespace, field_selector=""):
        want = dict(kv.split("=", 1) for kv in field_selector.split(",") if kv)
        with self.k.lock:
            found = [
                e for e in self.k.events
                if e["namespace"] == namespace
                and all(e.get(k) == v for k, v in want.items())
            ]  # fmt: skip
        return client.CoreV1EventList(
            items=[
                client.CoreV1Event(
                    metadata=client.V1ObjectMeta(name=f"{e['involvedObject.name']}.{i}", namespace=namespace),
                    involved_object=client.V1ObjectReference(
                        kind=e["involvedObject.kind"], name=e["involvedObject.name"], namespace=namespace
                    ),
                    reason=e["reason"], message=e["message"], type=e["type"],
                )
                for i, e in enumerate(found)
            ]
        )  # fmt: skip

    def read_namespaced_secret(self, name, namespace):
        self.k.calls.append(("read_secret", namespace, name))
        data = self.k.secrets.get((namespace, name))
        if data is None:
            raise api_error(404, "Not Found", f'secrets "{name}" not found')
        return client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace), data=dict(data)
        )

    def create_namespaced_secret(self, namespace, body):
        name = body["metadata"]["name"]
        self.k.calls.append(("create_secret", namespace, name))
        self._ns(namespace)
        with self.k.lock:
            if (namespace, name) in self.k.secrets:
                raise api_error(409, "Conflict", f'secrets "{name}" already exists')
            self.k.secrets[(namespace, name)] = dict(body.get("data") or {})
        return body

    def delete_namespaced_secret(self, name, namespace):
        self.k.calls.append(("delete_secret", namespace, name))
        with self.k.lock:
            if self.k.secrets.pop((namespace, name), None) is None:
                raise api_error(404, "Not Found", f'secrets "{name}" not found')
        return {"kind": "Status", "status": "Success"}

    def create_namespaced_service(self, namespace, body):
        name = body["metadata"]["name"]
        self.k.calls.append(("create_service", namespace, name))
        self._ns(namespace)
        with self.k.lock:
            if (namespace, name) in self.k.services:
                raise api_error(409, "Conflict", f'services "{name}" already exists')
            self.k.services[(namespace, name)] = copy.deepcopy(body)
        return body

    def delete_namespaced_service(self, name, namespace):
        self.k.calls.append(("delete_service", namespace, name))
        with self.k.lock:
            if self.k.services.pop((namespace, name), None) is None:
                raise api_error(404, "Not Found", f'services "{name}" not found')
        return {"kind": "Status", "status": "Success"}

    def read_namespaced_persistent_volume_claim(self, name, namespace):
        self.k.calls.append(("read_pvc", namespace, name))
        c = self.k.claims.get((namespace, name))
        if c is None:
            raise api_error(404, "Not Found", f'persistentvolumeclaims "{name}" not found')
        return client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=list(c["spec"]["accessModes"]),
                storage_class_name=c["spec"].get("storageClassName"),
            ),
            status=client.V1PersistentVolumeClaimStatus(phase=c["status"]["phase"]),
        )

    def delete_namespaced_persistent_volume_claim(self, name, namespace):
        self.k.calls.append(("delete_pvc", namespace, name))
        with self.k.lock:
            if self.k.claims.pop((namespace, name), None) is None:
                raise api_error(404, "Not Found", f'persistentvolumeclaims "{name}" not found')
        return {"kind": "Status", "status": "Success"}

    def create_namespaced_persistent_volume_claim(self, namespace, body):
        name = body["metadata"]["name"]
        self.k.calls.append(("create_pvc", namespace, name))
        self._ns(namespace)
        with self.k.lock:
            if (namespace, name) in self.k.claims:
                raise api_error(409, "Conflict", f'persistentvolumeclaims "{name}" already exists')
            obj = copy.deepcopy(body)
            obj["metadata"]["uid"] = secrets.token_hex(8)
            obj["status"] = {"phase": "Pending"}  # WaitForFirstConsumer: bound when a pod uses it
            self.k.claims[(namespace, name)] = obj
        return obj


class _Apps:
    """AppsV1Api: Deployments (their ReplicaSet played in reconcile)."""

    def __init__(self, k: KubeEmulator):
        self.k = k

    def create_namespaced_deployment(self, namespace, body):
        name = body["metadata"]["name"]
        self.k.calls.append(("create_deployment", namespace, name))
        _Core(self.k)._ns(namespace)
        with self.k.lock:
            if (namespace, name) in self.k.deployments:
                raise api_error(409, "Conflict", f'deployments.apps "{name}" already exists')
            obj = copy.deepcopy(body)
            obj["metadata"].update(namespace=namespace, uid=secrets.token_hex(8))
            self.k.deployments[(namespace, name)] = obj
        self.k.reconcile()
        return obj

    def delete_namespaced_deployment(self, name, namespace):
        self.k.calls.append(("delete_deployment", namespace, name))
        with self.k.lock:
            if self.k.deployments.pop((namespace, name), None) is None:
                raise api_error(404, "Not Found", f'deployments.apps "{name}" not found')
            for p in list(self.k.pods.values()):  # its ReplicaSet and pods, by owner reference
                if p.ns == namespace and p.node_type == "deployment" and p.group == name:
                    self.k._delete_pod(p)
        return {"kind": "Status", "status": "Success"}


class _Networking:
    """NetworkingV1Api: NetworkPolicies, kept and validated against Kubernetes' own schema
    (not enforced: the emulator's pods share one Docker network)."""

    def __init__(self, k: KubeEmulator):
        self.k = k

    def create_namespaced_network_policy(self, namespace, body):
        import kubernetes_validate

        name = body["metadata"]["name"]
        self.k.calls.append(("create_network_policy", namespace, name))
        _Core(self.k)._ns(namespace)
        try:
            kubernetes_validate.validate(body, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise api_error(422, "Unprocessable Entity", f"NetworkPolicy {name}: {e}") from None
        with self.k.lock:
            if (namespace, name) in self.k.network_policies:
                raise api_error(409, "Conflict", f'networkpolicies "{name}" already exists')
            self.k.network_policies[(namespace, name)] = copy.deepcopy(body)
        return body

    def delete_namespaced_network_policy(self, name, namespace):
        self.k.calls.append(("delete_network_policy", namespace, name))
        with self.k.lock:
            if self.k.network_policies.pop((namespace, name), None) is None:
                raise api_error(404, "Not Found", f'networkpolicies "{name}" not found')
        return {"kind": "Status", "status": "Success"}


class _Storage:
    def __init__(self, k: KubeEmulator):
        self.k = k

    def list_storage_class(self):
        return client.V1StorageClassList(
            items=[
                client.V1StorageClass(
                    metadata=client.V1ObjectMeta(
                        name=n,
                        annotations={"storageclass.kubernetes.io/is-default-class": "true"}
                        if n == self.k.default_class
                        else {},
                    ),
                    provisioner=prov,
                )
                for n, (prov, _) in self.k.classes.items()
            ]
        )


def _merge(target: dict, patch: dict) -> dict:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target
