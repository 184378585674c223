"""The Kubernetes API as the kuberay provider reaches it: the kubeconfig context resolved
once, a client whose every call is bounded in time, the API server's refusals as one-line
errors, and the RayCluster's worker group resized against concurrent writers."""

from __future__ import annotations

import json
import os
from typing import Any

from rayscale import procs
from rayscale.endpoint import api_timeout
from rayscale.errors import UserError
from rayscale.state import command

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
INSTALL_OPERATOR = (
    "install the KubeRay operator 1.7.0 (its chart installs the CRDs): helm repo add kuberay "
    "https://ray-project.github.io/kuberay-helm/ && helm install kuberay-operator "
    "kuberay/kuberay-operator --version 1.7.0"
)


def kubectl() -> str:
    found = procs.tool("kubectl")
    if not found:
        raise UserError(
            "the `kubectl` command is not installed (rayscale port-forwards the dashboard with it)",
            "install it (https://kubernetes.io/docs/tasks/tools/), or use --provider local",
        )
    return found


class ClusterGone(UserError):
    """The kube context or its API server is gone: nothing can be reached to delete."""


def resolve_context(context: str | None) -> tuple[str, str]:
    """(kubeconfig path, context name): the named context, else the current one, resolved now
    so that a later change of kubectl's current context cannot retarget this cluster."""
    from kubernetes import config

    # Read $KUBECONFIG now: the client library reads it once, at import.
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        contexts, current = config.list_kube_config_contexts(config_file=path)
    except config.ConfigException as e:
        raise UserError(
            f"no usable kubeconfig ({str(e).splitlines()[0]})",
            "set KUBECONFIG or create ~/.kube/config (kind, gcloud, aws eks update-kubeconfig)",
        ) from None
    names = [c["name"] for c in contexts]
    if context and context not in names:
        raise ClusterGone(
            f"kubeconfig has no context {context!r} (it has: {', '.join(names) or 'none'})",
            "pass one of those with --context",
        )
    if not context and not current:
        raise UserError("kubeconfig has no current context", "pass --context")
    return path, context or current["name"]


def _timed_api_client(configuration):
    """An API client whose every call that names no timeout gets one: a half-open
    connection to an API server would otherwise hang `up`, `status` or `down` for good."""
    from kubernetes import client

    bound = (10, api_timeout())  # (connect, read) seconds

    class TimedApiClient(client.ApiClient):
        def call_api(self, method, url, header_params=None, body=None, post_params=None,
                     _request_timeout=None):  # fmt: skip
            return super().call_api(method, url, header_params, body, post_params,
                                    _request_timeout or bound)  # fmt: skip

    configuration.retries = 1  # one retry: a lost connection is reported in 2 timeouts
    return TimedApiClient(configuration=configuration)


def load_api(context: str | None):
    """((CustomObjectsApi, CoreV1Api, StorageV1Api, AppsV1Api, NetworkingV1Api), context)
    for a kubeconfig context."""
    from kubernetes import client, config

    path, name = resolve_context(context)
    cfg = client.Configuration()
    config.load_kube_config(config_file=path, context=name, client_configuration=cfg)
    api = _timed_api_client(cfg)
    apis = (client.CustomObjectsApi(api), client.CoreV1Api(api), client.StorageV1Api(api))
    return (*apis, client.AppsV1Api(api), client.NetworkingV1Api(api)), name


def api_error(e: Exception, what: str, fix: str) -> UserError:
    status = getattr(e, "status", None)
    if status is None:  # no answer at all: urllib3's MaxRetryError, a refused connection
        return ClusterGone(
            f"{what}: the API server does not answer ({type(e).__name__})",
            "is the cluster up? (kind: `kind get clusters`; check `kubectl cluster-info`)",
        )
    if status == 403:  # RBAC: the API server's own words name the verb and the resource
        said = status_body(e).get("message") or "403 Forbidden"
        return UserError(
            f"{what}: {said}",
            "ask for that right in this namespace (see yours: kubectl auth can-i --list -n NS)",
        )
    reason = getattr(e, "reason", "") or type(e).__name__
    return UserError(f"{what}: {status} {reason}".strip(), fix)


def status_body(e: Exception) -> dict[str, Any]:
    """The API server's Status object of an ApiException ({} when there is none)."""
    try:
        return json.loads(getattr(e, "body", None) or "{}")
    except ValueError:
        return {}


def missing_namespace(e: Exception) -> bool:
    """A 404 for a namespace that does not exist (not for a missing resource type)."""
    return (
        getattr(e, "status", None) == 404
        and (status_body(e).get("details") or {}).get("kind") == "namespaces"
    )


# Writes that lose a race with another writer (the autoscaler, the operator) are redone
# on the object as it is now, at most this often.
CONFLICT_RETRIES = 8


def set_workers(
    custom, namespace: str, name: str, workers: int, remove: list[str] | None = None
) -> int:
    """Pin the first worker group at `workers`, naming in scaleStrategy.workersToDelete the
    pods to remove (KubeRay deletes those whatever `replicas` says, with autoscaling on or
    off: raycluster_controller.go, reconcilePods); returns the writes it took.

    A merge patch replaces the whole workerGroupSpecs list, which the autoscaler writes too:
    the patch carries the resourceVersion it was made from, so the API server refuses it
    (409 Conflict) when another write came between, and it is made again from the new one."""
    for attempt in range(1, CONFLICT_RETRIES + 1):
        try:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except Exception as e:
            if getattr(e, "status", None) == 404:
                raise UserError(
                    f"RayCluster {name} no longer exists",
                    f"run {command('cluster down')} then {command('cluster up')} again",
                ) from None
            raise api_error(e, f"cannot read RayCluster {name}", "check the API server") from None
        groups = obj["spec"]["workerGroupSpecs"]
        # replicas for the operator, minReplicas / maxReplicas for the autoscaler: pinned
        # to N, so neither adds nor removes workers while the study measures N.
        groups[0].update(replicas=workers, minReplicas=workers, maxReplicas=workers)
        if remove:  # beside any the autoscaler named: its write is not lost either
            named = (groups[0].get("scaleStrategy") or {}).get("workersToDelete") or []
            groups[0]["scaleStrategy"] = {"workersToDelete": list(dict.fromkeys(named + remove))}
        body = {
            "metadata": {"resourceVersion": obj["metadata"].get("resourceVersion")},
            "spec": {"workerGroupSpecs": groups},
        }
        try:
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
            return attempt
        except Exception as e:
            if getattr(e, "status", None) != 409:
                raise api_error(
                    e, f"cannot resize RayCluster {name}", "check your RBAC rights on ray.io"
                ) from None
    raise UserError(
        f"cannot resize RayCluster {name}: another writer changed it {CONFLICT_RETRIES} times in a row",
        "is a second rayscale or an autoscaler resizing it? stop it, then scale again",
    )


def no_namespace(ns: str) -> UserError:
    """The error for a namespace that does not exist (missing_namespace said so)."""
    return UserError(
        f"namespace {ns!r} does not exist",
        f"create it (kubectl create namespace {ns}) or pass another --namespace",
    )
