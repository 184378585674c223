"""GCS fault tolerance for a RayCluster on a Redis (`cluster up --gcs-ft redis[://...]`).

KubeRay keeps the head's GCS in Redis when `gcsFaultToleranceOptions` is set (pod.go,
configureRedisFT): a replaced head reads the cluster's state back under the cluster's
uid, and workers wait up to 600 s for it instead of dying with the old head. The Redis
password goes in a Secret the kit makes (`<cluster>-redis`, key `password`), referenced
by `redisPassword.valueFrom`, never in the RayCluster's spec.

`--gcs-ft redis` deploys that Redis beside the cluster, as KubeRay's external-redis sample
does (a Deployment and a ClusterIP Service, both `<cluster>-redis`), with a random password.
On delete KubeRay holds the RayCluster (finalizer ray.io/gcs-ft-redis-cleanup-finalizer)
until a Job of the head's image has deleted the cluster's keys from Redis, with the
password from the Secret: so the Redis and the Secret go only after the RayCluster has.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from rayscale.errors import UserError
from rayscale.manifests import skip_annotations
from rayscale.providers.pod_health import PodWatch, pending_reason, ready, terminating

KEY = "password"
# A Redis of the user's takes its password from here, never from argv (shell history,
# /proc/*/cmdline): the value, or a file holding it.
PASSWORD_ENV = "RAYSCALE_REDIS_PASSWORD"
PASSWORD_FILE_ENV = "RAYSCALE_REDIS_PASSWORD_FILE"
USAGE = (
    "pass --gcs-ft redis (rayscale deploys one), or redis://HOST:PORT or rediss://HOST:PORT "
    f"(TLS), a Redis every Ray pod can reach, its password in ${PASSWORD_ENV} or a file "
    f"named by ${PASSWORD_FILE_ENV}"
)
IMAGE = "redis:7.4.6"  # the 7.4 line of KubeRay's samples, patched for CVE-2025-49844 and earlier
PORT = 6379
UID = 999  # the official image's redis user
# KubeRay's cleanup Job gives up after activeDeadlineSeconds 300; the head's grace before it.
CLEANUP_WAIT_S = 360.0


@dataclasses.dataclass(frozen=True)
class Redis:
    # host:port (rediss://host:port for TLS), as the head reaches it; None: rayscale deploys it
    address: str | None
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def deployed(self) -> bool:
        return self.address is None


def masked(spec: str) -> str:
    """A Redis URL as it may be shown: any password in it replaced by ***."""
    u = urlsplit(spec)
    if u.password is None:
        return spec
    host = u.netloc.rsplit("@", 1)[1]
    return u._replace(netloc=f":***@{host}").geturl()


def parse(spec: str) -> Redis:
    if spec == "redis":
        return Redis(None, None)
    u = urlsplit(spec)
    try:
        port = u.port
    except ValueError:
        port = None
    if u.scheme not in ("redis", "rediss") or not u.hostname or not port:
        raise UserError(
            f"--gcs-ft {masked(spec)!r} is neither redis nor redis[s]://HOST:PORT", USAGE
        )
    if u.password is not None or u.username:
        raise UserError(
            "--gcs-ft carries a password, which stays in your shell history and the process "
            f"list ({masked(spec)})",
            f"pass {u.scheme}://{u.hostname}:{port} and the password in ${PASSWORD_ENV} or "
            f"a file named by ${PASSWORD_FILE_ENV}",
        )
    address = f"{u.hostname}:{port}" if u.scheme == "redis" else f"rediss://{u.hostname}:{port}"
    return Redis(address, _password())


def _password() -> str | None:
    path = os.environ.get(PASSWORD_FILE_ENV)
    if path:
        try:
            return Path(path).expanduser().read_text().strip() or None
        except OSError as e:
            raise UserError(
                f"${PASSWORD_FILE_ENV} {path} cannot be read: {e.strerror}",
                "point it at a file holding the Redis password",
            ) from None
    return os.environ.get(PASSWORD_ENV) or None


def secret_name(cluster: str) -> str:
    return f"{cluster}-redis"


def options(r: Redis, cluster: str) -> dict:
    """The RayCluster's spec.gcsFaultToleranceOptions."""
    out: dict = {"redisAddress": r.address or f"{secret_name(cluster)}:{PORT}"}
    if r.password or r.deployed:
        out["redisPassword"] = {
            "valueFrom": {"secretKeyRef": {"name": secret_name(cluster), "key": KEY}}
        }
    return out


def _meta(cluster: str, namespace: str) -> dict:
    return {
        "name": secret_name(cluster),
        "namespace": namespace,
        "labels": {"app.kubernetes.io/created-by": "rayscale", "ray.io/cluster": cluster},
    }


def secret(password: str, cluster: str, namespace: str) -> dict:
    """The password's Secret: the user's, or a random one for the Redis the kit deploys."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(cluster, namespace),
        "type": "Opaque",
        "data": {KEY: base64.b64encode(password.encode()).decode()},
    }


def _selector(cluster: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": secret_name(cluster)}


def service(cluster: str, namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(cluster, namespace),
        "spec": {
            "type": "ClusterIP",  # reached by the Ray pods only, never exposed
            "selector": _selector(cluster),
            "ports": [{"name": "redis", "port": PORT, "targetPort": PORT}],
        },
    }


def network_policy(cluster: str, namespace: str) -> dict:
    """Ingress to the Redis from its RayCluster's pods only (the head, and KubeRay's cleanup
    Job, built from the head's pod), on the Redis port: nothing else in the cluster may try
    the password. Enforced where the network plugin enforces NetworkPolicies."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(cluster, namespace),
        "spec": {
            "podSelector": {"matchLabels": _selector(cluster)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"ray.io/cluster": cluster}}}],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
        },
    }


def deployment(cluster: str, namespace: str, image: str) -> dict:
    """One Redis, non-root on a read-only root, its password read from the Secret into a
    config file (not the command line), append-only data on an emptyDir: it outlives a
    restart of its container, not the loss of its pod."""
    labels = {**_meta(cluster, namespace)["labels"], **_selector(cluster)}
    start = (
        'printf "requirepass %s\\n" "$REDIS_PASSWORD" > /tmp/redis.conf && '
        f"exec redis-server /tmp/redis.conf --port {PORT} --dir /data --appendonly yes"
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **_meta(cluster, namespace),
            "labels": labels,
            "annotations": skip_annotations(SCAN_SKIPS),
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # never two Redis pods on one name
            "selector": {"matchLabels": _selector(cluster)},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "runAsNonRoot": True,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "redis",
                            "image": image,
                            "command": ["sh", "-c", start],
                            "env": [
                                {
                                    "name": "REDIS_PASSWORD",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": secret_name(cluster), "key": KEY}
                                    },
                                }
                            ],
                            "ports": [{"name": "redis", "containerPort": PORT}],
                            "readinessProbe": {
                                "tcpSocket": {"port": PORT},
                                "periodSeconds": 2,
                                "failureThreshold": 3,
                            },
                            "livenessProbe": {
                                "tcpSocket": {"port": PORT},
                                "initialDelaySeconds": 10,
                                "periodSeconds": 10,
                                "failureThreshold": 6,
                            },
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "1", "memory": "1Gi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "data", "mountPath": "/data"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                    ],
                },
            },
        },
    }


# checkov findings on the Redis pod that are by design, each with its reason (`make scan`).
SCAN_SKIPS = {
    "CKV_K8S_15": "IfNotPresent on purpose: a mirrored or kind-loaded image; tags are versions",
    "CKV_K8S_43": "pinned by version tag, as KubeRay's samples pin it",
    "CKV_K8S_40": "uid 999 is the redis user the official image owns its files as",
    "CKV_K8S_35": "Ray's head takes the same password as env (KubeRay's REDIS_PASSWORD)",
}


def _absent_ok(call: Callable[[], object]) -> None:
    try:
        call()
    except Exception as e:
        if getattr(e, "status", None) != 404:
            raise


class KitRedis:
    """The Redis `--gcs-ft redis` deploys: NetworkPolicy, Service and Deployment
    `<cluster>-redis`, beside the password's Secret. api_error(e, what, fix) -> UserError."""

    def __init__(self, core, apps, networking, namespace: str, cluster: str, api_error):
        self.core, self.apps, self.networking = core, apps, networking
        self.ns, self.cluster = namespace, cluster
        self.name, self._error = secret_name(cluster), api_error

    def create(self, image: str) -> None:
        """Its NetworkPolicy first (the Redis never runs open), Service and Deployment (the
        kit makes the password's Secret before)."""
        steps = (
            ("NetworkPolicy", lambda: self.networking.create_namespaced_network_policy(
                self.ns, network_policy(self.cluster, self.ns))),
            ("Service", lambda: self.core.create_namespaced_service(
                self.ns, service(self.cluster, self.ns))),
            ("Deployment", lambda: self.apps.create_namespaced_deployment(
                self.ns, deployment(self.cluster, self.ns, image))),
        )  # fmt: skip
        for kind, make in steps:
            try:
                make()
            except Exception as e:
                raise self._error(
                    e,
                    f"cannot create the {kind} {self.name} for GCS fault tolerance",
                    f"your role needs `create` on {kind.lower()} objects in namespace {self.ns}, "
                    "or pass "
                    "--gcs-ft redis://HOST:PORT (a Redis of yours)",
                ) from None

    def wait_ready(self, deadline: float, tail: Callable[[object], str]) -> None:
        """Until the Redis pod is Ready; one line naming what keeps it from starting."""
        sel = ",".join(f"{k}={v}" for k, v in _selector(self.cluster).items())
        describe = f"kubectl -n {self.ns} describe pod -l {sel}"
        watch = PodWatch(tail)
        while True:
            pods = [
                p
                for p in self.core.list_namespaced_pod(self.ns, label_selector=sel).items
                if not terminating(p)
            ]
            if any(ready(p) for p in pods):
                return
            hopeless = next((v for v in map(watch.verdict, pods) if v), None)
            if hopeless:
                raise UserError(
                    f"the Redis for GCS fault tolerance ({self.name}) cannot start: {hopeless}",
                    f"pass --redis-image with an image your nodes can pull; {describe}",
                )
            if time.monotonic() > deadline:
                why = pending_reason(pods[0]) if pods else "no pod was created"
                raise UserError(
                    f"the Redis for GCS fault tolerance ({self.name}) is not ready: {why}", describe
                )
            time.sleep(1.0)

    def delete(self) -> None:
        """Whatever of it exists (the kit deletes the Secret after)."""
        with contextlib.suppress(Exception):
            _absent_ok(lambda: self.apps.delete_namespaced_deployment(self.name, self.ns))
        with contextlib.suppress(Exception):
            _absent_ok(lambda: self.core.delete_namespaced_service(self.name, self.ns))
        with contextlib.suppress(Exception):
            _absent_ok(lambda: self.networking.delete_namespaced_network_policy(self.name, self.ns))
