"""GCS fault tolerance for a RayCluster on a Redis (`cluster up --gcs-ft redis://...`).

KubeRay keeps the head's GCS in Redis when `gcsFaultToleranceOptions` is set (pod.go,
configureRedisFT): a replaced head reads the cluster's state back under the cluster's
uid, and workers wait up to 600 s for it instead of dying with the old head. The Redis
password goes in a Secret the kit makes (`<cluster>-redis`, key `password`), referenced
by `redisPassword.valueFrom`, never in the RayCluster's spec.
"""

from __future__ import annotations

import base64
import dataclasses
from urllib.parse import unquote, urlsplit

from rayscale.errors import UserError

KEY = "password"
USAGE = "pass --gcs-ft redis://[:PASSWORD@]HOST:PORT, a Redis every Ray pod can reach"


@dataclasses.dataclass(frozen=True)
class Redis:
    address: str  # host:port, as the head reaches it
    password: str | None


def parse(spec: str) -> Redis:
    if spec == "redis":
        raise UserError("--gcs-ft redis (a Redis deployed by rayscale) is not built yet", USAGE)
    u = urlsplit(spec)
    try:
        port = u.port
    except ValueError:
        port = None
    if u.scheme != "redis" or not u.hostname or not port:
        raise UserError(f"--gcs-ft {spec!r} is not redis://HOST:PORT", USAGE)
    return Redis(f"{u.hostname}:{port}", unquote(u.password) if u.password else None)


def secret_name(cluster: str) -> str:
    return f"{cluster}-redis"


def options(r: Redis, cluster: str) -> dict:
    """The RayCluster's spec.gcsFaultToleranceOptions."""
    out: dict = {"redisAddress": r.address}
    if r.password:
        out["redisPassword"] = {
            "valueFrom": {"secretKeyRef": {"name": secret_name(cluster), "key": KEY}}
        }
    return out


def secret(r: Redis, cluster: str, namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(cluster),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/created-by": "rayscale", "ray.io/cluster": cluster},
        },
        "type": "Opaque",
        "data": {KEY: base64.b64encode((r.password or "").encode()).decode()},
    }
