"""KubeRay manifests: one template, two profiles (kind on a laptop, a cloud Kubernetes).

The one source of truth for every RayCluster / RayJob the kit applies or ships. The files
under k8s/ are this module's output (`make k8s-manifests`; a test fails when they drift),
for users who prefer `kubectl apply` to rayscale. Laptop and cloud differ only in the
Profile: sizes, where the image comes from, node placement, and results storage.

Ray / KubeRay rules kept here: the head runs no trials (num-cpus "0"); requests equal
limits (KubeRay sizes Ray from the limits, and Guaranteed pods are not evicted first);
the image pinned and IfNotPresent; in-tree autoscaling with autoscaler v2 (which wants
restartPolicy Never) and an idle timeout; token auth by authOptions (the operator makes
the Secret); pods non-root with no privilege escalation and no capabilities; the
dashboard behind the head Service KubeRay makes (headless by default), reached by
port-forward only.

Results storage: Tune's storage path is a PersistentVolumeClaim on every profile. A
hostPath volume does not work for the pods' uid 1000: the kubelet creates it as root, mode
0755, and fsGroup does not apply to hostPath. kind's default StorageClass (`standard`,
rancher.io/local-path) creates each volume 0777, ReadWriteOnce, which every pod on kind's
single node shares; a cloud cluster needs a ReadWriteMany class (EFS, Filestore, Azure
Files, NFS) because the pods run on separate nodes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from rayscale import __version__, runtime

RAY_VERSION = "2.60.0"
KUBERAY_VERSION = "1.7.0"
GROUP = "workers"
RESULTS_CLAIM = "rayscale-results"
RESULTS = "/home/ray/rayscale_results"  # the job's default --storage-path in the image
JOB = "/opt/rayscale/job/tune_xgboost.py"


@dataclass(frozen=True)
class Profile:
    name: str
    image: str
    head_cpu: str
    head_memory: str
    worker_cpu: str
    worker_memory: str
    max_workers: (
        int  # the autoscaler's ceiling in the shipped manifests (rayscale pins min = max = N)
    )
    idle_timeout_s: int
    # Tune keeps trial checkpoints on a claim every pod mounts: its access mode and class.
    results_access: str
    storage_class: str | None
    results_size: str
    # The default image is one no registry serves (the cloud profile): --image is required.
    image_required: bool = False
    node_selector: dict[str, str] = field(default_factory=dict)
    job_args: tuple[str, ...] = ()
    # CPU requests below the limits (Burstable pods): where the node's cores are fewer than
    # the pods' limits add up to. Ray sizes a node from its limit either way.
    head_cpu_request: str | None = None
    worker_cpu_request: str | None = None
    autoscaler_cpu_request: str = "500m"


# kind: one Docker container is the whole Kubernetes node; the image is `kind load`ed.
KIND = Profile(
    name="kind",
    image=f"rayscale:{__version__}",
    head_cpu="1",
    head_memory="2Gi",
    worker_cpu="1",
    worker_memory="2Gi",
    max_workers=4,
    idle_timeout_s=60,
    # kind's default class: one node, so ReadWriteOnce is shared by every pod.
    results_access="ReadWriteOnce",
    storage_class="standard",
    results_size="5Gi",
    job_args=(
        "--data",
        "synthetic:rows=5000,features=20,noise=1.0,seed=0",
        "--num-samples",
        "8",
        "--max-rounds",
        "200",
    ),
)

PROFILES = {
    "kind": KIND,
    # A one-node Kubernetes of a few cores (`make k8s-up` here, minikube, k3s): kind's
    # sizes, but Burstable, so a head and two 1-CPU workers fit on 2 cores.
    "small": replace(
        KIND,
        name="small",
        head_cpu_request="250m",
        worker_cpu_request="750m",
        autoscaler_cpu_request="100m",
        storage_class=None,
    ),
    # A cloud cluster: one worker pod per 8-vCPU node, the image from your registry, and a
    # ReadWriteMany claim (EFS, Filestore, Azure Files) for checkpoints; the class is the
    # cluster's default unless --storage-class names one.
    "cloud": Profile(
        name="cloud",
        image=f"registry.example.com/you/rayscale:{__version__}",
        head_cpu="2",
        head_memory="8Gi",
        worker_cpu="7",
        worker_memory="28Gi",
        max_workers=16,
        idle_timeout_s=300,
        results_access="ReadWriteMany",
        storage_class=None,
        results_size="20Gi",
        image_required=True,
        node_selector={"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
        job_args=(
            "--data",
            "synthetic:rows=200000,features=30,noise=1.0,seed=0",
            "--num-samples",
            "32",
            "--max-rounds",
            "500",
        ),
    ),
}

SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


# checkov findings on the Ray pods that are by design, each with its reason. They travel as
# pod-template annotations, where checkov reads them (`make scan` scans the templates).
SCAN_SKIPS = {
    "CKV_K8S_8": "KubeRay injects the liveness probe into Ray containers itself",
    "CKV_K8S_9": "KubeRay injects the readiness probe into Ray containers itself",
    "CKV_K8S_15": "IfNotPresent on purpose: kind-loaded images exist only on the node; tags are immutable versions",
    "CKV_K8S_43": "pinned by version tag; a kind-loaded local image has no registry digest",
    "CKV_K8S_40": "uid 1000 is the ray user the image and the official Ray images own their files as",
    "CKV_K8S_22": "Ray writes session files, spilled objects and runtime envs under /tmp and $HOME",
    "CKV2_K8S_6": "every Ray port requires the cluster token; KubeRay's networkPolicy is feature-gated in 1.7",
}
# What automountServiceAccountToken projects (token, CA, namespace), for one container.
SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
API_TOKEN_VOLUME = {
    "name": "kube-api-access",
    "projected": {
        "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {
                "configMap": {
                    "name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }
            },
            {
                "downwardAPI": {
                    "items": [
                        {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                    ]
                }
            },
        ]
    },
}


def skip_annotations(skips: dict[str, str]) -> dict[str, str]:
    return {
        f"checkov.io/skip{i}": f"{check}={why}" for i, (check, why) in enumerate(skips.items(), 1)
    }


def profile(name: str) -> Profile:
    from rayscale.errors import UserError

    if name not in PROFILES:
        raise UserError(
            f"unknown manifest profile {name!r}", f"choose one of: {', '.join(PROFILES)}"
        )
    return PROFILES[name]


def _resources(cpu: str, memory: str, cpu_request: str | None = None) -> dict[str, Any]:
    return {
        "requests": {"cpu": cpu_request or cpu, "memory": memory},
        "limits": {"cpu": cpu, "memory": memory},
    }


def _pod(
    p: Profile,
    image: str,
    container: str,
    cpu: str,
    memory: str,
    claim: str,
    ports: list | None = None,
    cpu_request: str | None = None,
) -> dict:
    c: dict[str, Any] = {
        "name": container,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": _resources(cpu, memory, cpu_request),
        "securityContext": SECURITY,
        # Token auth is KubeRay's (authOptions); the rest of every node's env is runtime's.
        "env": [
            {"name": k, "value": v} for k, v in runtime.node_env().items() if k != "RAY_AUTH_MODE"
        ],
        "volumeMounts": [
            {"name": "results", "mountPath": RESULTS},
            # KubeRay shares Ray's logs with the autoscaler sidecar only through a volume
            # of this name at /tmp/ray (pod.go: RayLogVolumeName); any other name hides them.
            {"name": "ray-logs", "mountPath": "/tmp/ray"},
            {"name": "shared-mem", "mountPath": "/dev/shm"},
        ],
    }
    if ports:
        c["ports"] = ports
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # autoscaler v2 replaces failed pods itself
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [c],
        "volumes": [
            {"name": "results", "persistentVolumeClaim": {"claimName": claim}},
            {"name": "ray-logs", "emptyDir": {}},
            # Ray's object store lives in /dev/shm; the default 64 MiB is far too small.
            {"name": "shared-mem", "emptyDir": {"medium": "Memory"}},
        ],
    }
    if p.node_selector:
        spec["nodeSelector"] = dict(p.node_selector)
    return {"metadata": {"annotations": skip_annotations(SCAN_SKIPS)}, "spec": spec}


def cluster_spec(
    p: Profile,
    workers: int,
    image: str | None = None,
    claim: str = RESULTS_CLAIM,
    max_workers: int | None = None,
) -> dict[str, Any]:
    """max_workers: the autoscaler's ceiling; rayscale passes `workers` so that a cluster it
    holds at N stays at N (min = max = replicas), the shipped files the profile's ceiling."""
    image = image or p.image
    max_workers = max(max_workers or p.max_workers, workers)
    head = _pod(
        p,
        image,
        "ray-head",
        p.head_cpu,
        p.head_memory,
        claim,
        ports=[
            {"containerPort": runtime.GCS_PORT, "name": "gcs-server"},
            {"containerPort": runtime.DASHBOARD_PORT, "name": "dashboard"},
            {"containerPort": runtime.CLIENT_PORT, "name": "client"},
        ],
        cpu_request=p.head_cpu_request,
    )
    # The head's autoscaler sidecar talks to the API server: it alone gets the token, as
    # the automount would give it. Mounted pod-wide, a job's code could patch the cluster.
    head["spec"]["volumes"].append(API_TOKEN_VOLUME)
    worker = _pod(
        p,
        image,
        "ray-worker",
        p.worker_cpu,
        p.worker_memory,
        claim,
        cpu_request=p.worker_cpu_request,
    )
    return {
        "rayVersion": RAY_VERSION,
        "authOptions": {"mode": "token"},
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "version": "v2",
            "idleTimeoutSeconds": p.idle_timeout_s,
            "upscalingMode": "Default",
            "imagePullPolicy": "IfNotPresent",
            "resources": _resources("500m", "512Mi", p.autoscaler_cpu_request),
            "securityContext": SECURITY,
            "volumeMounts": [
                {"name": API_TOKEN_VOLUME["name"], "mountPath": SA_PATH, "readOnly": True}
            ],
        },
        "headGroupSpec": {
            "serviceType": "ClusterIP",
            # KubeRay sizes nodes from the containers' limits; the rest is runtime's.
            "rayStartParams": runtime.start_params(
                runtime.head(dashboard_host="0.0.0.0", sized=False)
            ),
            "template": head,
        },
        "workerGroupSpecs": [
            {
                "groupName": GROUP,
                "replicas": workers,
                "minReplicas": workers,
                "maxReplicas": max_workers,
                "rayStartParams": runtime.start_params(runtime.worker(None)),
                "template": worker,
            }
        ],
    }


def _meta(name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/name": "rayscale", "app.kubernetes.io/version": __version__},
    }
    if namespace:
        meta["namespace"] = namespace
    return meta


def raycluster(
    name: str,
    workers: int,
    p: Profile,
    image: str | None = None,
    namespace: str | None = None,
    claim: str = RESULTS_CLAIM,
    max_workers: int | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": _meta(name, namespace),
        "spec": cluster_spec(p, workers, image, claim, max_workers),
    }


def rayjob(
    name: str,
    p: Profile,
    workers: int = 2,
    image: str | None = None,
    namespace: str | None = None,
    cluster: str | None = None,
    job_args: list[str] | None = None,
) -> dict[str, Any]:
    """The tuning job as a RayJob: on its own cluster, or (cluster=NAME) on a running one."""
    import shlex

    args = list(job_args if job_args is not None else p.job_args)
    spec: dict[str, Any] = {
        "entrypoint": shlex.join(["python", JOB, *args]),
        "submissionMode": "K8sJobMode",
        "activeDeadlineSeconds": 7200,
    }
    if cluster:
        # KubeRay refuses shutdown / TTL / backoff on a cluster it did not make.
        spec["clusterSelector"] = {"ray.io/cluster": cluster}
    else:
        spec.update(
            shutdownAfterJobFinishes=True,
            ttlSecondsAfterFinished=300,
            rayClusterSpec=cluster_spec(p, workers, image),
        )
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _meta(name, namespace),
        "spec": spec,
    }


def results_claim(
    p: Profile,
    namespace: str | None = None,
    name: str = RESULTS_CLAIM,
    storage_class: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [p.results_access],
        "resources": {"requests": {"storage": p.results_size}},
    }
    if storage_class or p.storage_class:
        spec["storageClassName"] = storage_class or p.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(name, namespace),
        "spec": spec,
    }


# Where kind's local-path provisioner (its `standard` class) makes each claim's folder.
KIND_VOLUMES = "/var/local-path-provisioner"


def kind_config(name: str = "rayscale", volumes_dir: str | None = None) -> dict[str, Any]:
    """volumes_dir: a folder on the machine that holds the node's local-path volumes, so
    that the claims' files outlive `kind delete cluster` (it removes the node container)."""
    node: dict[str, Any] = {"role": "control-plane"}
    if volumes_dir:
        node["extraMounts"] = [{"hostPath": volumes_dir, "containerPath": KIND_VOLUMES}]
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": name,
        "nodes": [node],
    }


# Values for the kuberay-operator chart. `rayscale cluster up --provider kind` applies the
# chart's own CRDs server-side first (Helm never upgrades crds/) and installs it --skip-crds.
OPERATOR_VALUES = {
    "image": {"pullPolicy": "IfNotPresent"},
    "resources": _resources("100m", "512Mi"),
    "securityContext": SECURITY,
}


# ---- KubeRay's own admission rules (ray-operator/controllers/ray/utils/validation.go) ------


def kuberay_rules(spec: dict[str, Any]) -> list[str]:
    """The RayCluster spec rules KubeRay v1.7 enforces that a JSON schema cannot express."""
    errs = []
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    head = spec["headGroupSpec"]
    if not head["template"]["spec"].get("containers"):
        errs.append("headGroupSpec should have at least one container")
    groups = [("Head", head)] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    for name, g in groups:
        rsp = g.get("rayStartParams", {})
        if any(rsp.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and g.get(
            "resources"
        ):
            errs.append(f"resource fields set in both rayStartParams and resources for {name}")
        if "labels" in rsp:
            errs.append(f"rayStartParams['labels'] is not supported for {name}")
    for g in spec.get("workerGroupSpecs", []):
        lo, hi = g.get("minReplicas"), g.get("maxReplicas")
        if not autoscaling and (lo is None or hi is None):
            errs.append(f"worker group {g['groupName']} must set minReplicas and maxReplicas")
        if lo is not None and hi is not None and lo > hi:
            errs.append(f"worker group {g['groupName']} has minReplicas {lo} > maxReplicas {hi}")
        if autoscaling and g.get("suspend"):
            errs.append(f"worker group {g['groupName']} cannot be suspended with autoscaling")
    if autoscaling and (spec.get("autoscalerOptions") or {}).get("version") == "v2":
        for name, g in groups:
            if g["template"]["spec"].get("restartPolicy", "Never") != "Never":
                errs.append(f"restartPolicy for {name} should be Never with autoscaler v2")
    auth = spec.get("authOptions")
    if (auth or {}).get("mode") == "token":  # KubeRay enables auth for exactly this mode
        v = spec.get("rayVersion", "")
        if not v or tuple(int(x) for x in v.split(".")[:2]) < (2, 52):
            errs.append("authOptions.mode token needs rayVersion 2.52.0 or later")
    if spec.get("networkPolicy"):
        errs.append("spec.networkPolicy needs the RayClusterNetworkPolicy feature gate")
    return errs


def rayjob_rules(job: dict[str, Any]) -> list[str]:
    s = job["spec"]
    errs = []
    selector = s.get("clusterSelector") or {}
    if s.get("ttlSecondsAfterFinished", 0) > 0 and not s.get("shutdownAfterJobFinishes"):
        errs.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes")
    if not s.get("rayClusterSpec") and not selector:
        errs.append("one of rayClusterSpec or clusterSelector must be set")
    if selector and not selector.get("ray.io/cluster"):
        errs.append("clusterSelector must name the cluster with ray.io/cluster")
    if selector and (s.get("backoffLimit") or 0) > 0:
        errs.append("backoffLimit is incompatible with clusterSelector")
    if s.get("rayClusterSpec"):
        errs += kuberay_rules(s["rayClusterSpec"])
    return errs


def shipped() -> dict[str, Any]:
    """Every file under k8s/, by path: what `make k8s-manifests` writes."""
    out: dict[str, Any] = {
        "k8s/kind-config.yaml": kind_config(),
        "k8s/operator-values.yaml": copy.deepcopy(OPERATOR_VALUES),
    }
    for name, p in PROFILES.items():
        out[f"k8s/{name}/raycluster.yaml"] = raycluster("rayscale", 2, p)
        out[f"k8s/{name}/rayjob.yaml"] = rayjob("rayscale-tune", p)
        out[f"k8s/{name}/rayjob-on-existing.yaml"] = rayjob(
            "rayscale-tune-existing", p, cluster="rayscale"
        )
        out[f"k8s/{name}/results-pvc.yaml"] = results_claim(p)
    return out


def write_shipped(root) -> list[str]:
    import pathlib

    import yaml

    header = (
        "# Generated by `make k8s-manifests` from rayscale/manifests.py (the one source of\n"
        "# truth); edit the profile there, not this file.\n"
    )
    written = []
    for rel, doc in shipped().items():
        path = pathlib.Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
        written.append(rel)
    return written


def scan_pods(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The Pods a RayCluster / RayJob makes, as plain Pod manifests: checkov does not read
    pod templates inside custom resources, so `make scan` checks these instead."""
    spec = (
        doc["spec"]
        if doc.get("kind") == "RayCluster"
        else doc.get("spec", {}).get("rayClusterSpec")
    )
    if not spec:
        return []
    groups = [("head", spec["headGroupSpec"]["template"])]
    groups += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{doc['metadata']['name']}-{role}",
                "namespace": "rayscale",
                **copy.deepcopy(t.get("metadata") or {}),
            },
            "spec": copy.deepcopy(t["spec"]),
        }
        for role, t in groups
    ]


def to_yaml(*docs: Any) -> str:
    """Documents as `kubectl apply -f` takes them: `---` between, keys in their order, and
    no YAML anchors where two places hold the same labels."""
    import yaml

    class Plain(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump_all(docs, Dumper=Plain, sort_keys=False)
