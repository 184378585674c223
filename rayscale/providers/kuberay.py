"""The kuberay provider: a RayCluster on any Kubernetes cluster that runs the KubeRay operator.

API work goes through the kubernetes Python client (the context and namespace the user
names): create the RayCluster rendered by rayscale.manifests, patch its worker group to
resize, read pods and the operator-made token Secret, delete it. The dashboard / Job API
stays on a ClusterIP Service; rayscale reaches it with `kubectl port-forward` under a
managed forward (rayscale.forward) that restarts it when it drops, a common KubeRay
complaint during long jobs. Readiness: worker pods Ready, then N Ray worker nodes ALIVE
as the dashboard reports them.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from typing import Any

from rayscale import dashboard, manifests, procs
from rayscale.errors import UserError
from rayscale.providers.base import (
    ClusterStatus,
    ForwardedProvider,
    status_from_dashboard,
    wait_job_api,
)

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
INSTALL_OPERATOR = ("install the KubeRay operator 1.7.0: kubectl apply --server-side -k "
                    "'github.com/ray-project/kuberay/ray-operator/config/crd?ref=v1.7.0' && helm install "
                    "kuberay-operator kuberay/kuberay-operator --version 1.7.0 --skip-crds")


def kubectl() -> str:
    found = procs.tool("kubectl")
    if not found:
        raise UserError("the `kubectl` command is not installed (rayscale port-forwards the dashboard with it)",
                        "install it (https://kubernetes.io/docs/tasks/tools/), or use --provider local")
    return found


def load_api(context: str | None):
    """(CustomObjectsApi, CoreV1Api) for a kubeconfig context; a UserError naming the fix."""
    from kubernetes import client, config

    # Read $KUBECONFIG now: the client library reads it once, at import.
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        contexts, current = config.list_kube_config_contexts(config_file=path)
    except config.ConfigException as e:
        raise UserError(f"no usable kubeconfig ({str(e).splitlines()[0]})",
                        "set KUBECONFIG or create ~/.kube/config (kind, gcloud, aws eks update-kubeconfig)") from None
    names = [c["name"] for c in contexts]
    if context and context not in names:
        raise UserError(f"kubeconfig has no context {context!r} (it has: {', '.join(names) or 'none'})",
                        "pass one of those with --context")
    api = config.new_client_from_config(config_file=path, context=context or current["name"])
    return client.CustomObjectsApi(api), client.CoreV1Api(api)


def _api_error(e: Exception, what: str, fix: str) -> UserError:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", "") or type(e).__name__
    return UserError(f"{what}: {status or ''} {reason}".strip(), fix)


class KubeRayProvider(ForwardedProvider):
    name = "kuberay"
    default_timeout = 600.0  # pods may wait for a node to be added to the Kubernetes cluster
    profile_name = "cloud"

    def __init__(self, state, shape=None, api=None, **options: Any):
        super().__init__(state, shape, **options)
        self._api = api  # (custom, core): injected by tests, else built from the kubeconfig

    # ---- plumbing ---------------------------------------------------------------------

    def _apis(self, rec: dict[str, Any] | None = None):
        if self._api is None:
            self._api = load_api((rec or {}).get("context") or self.options.get("context"))
        return self._api

    def _ns(self, rec: dict[str, Any] | None = None) -> str:
        return (rec or {}).get("namespace") or self.options.get("namespace") or "default"

    def _get(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        custom, _ = self._apis(rec)
        try:
            return custom.get_namespaced_custom_object(GROUP, VERSION, rec["namespace"], PLURAL, rec["name"])
        except Exception as e:
            if getattr(e, "status", None) == 404:
                return None
            raise _api_error(e, f"cannot read RayCluster {rec['name']}",
                             "check --context / --namespace and your access to ray.io resources") from None

    def _pods(self, rec: dict[str, Any], node_type: str) -> list:
        _, core = self._apis(rec)
        sel = f"ray.io/cluster={rec['name']},ray.io/node-type={node_type}"
        return list(core.list_namespaced_pod(rec["namespace"], label_selector=sel).items)

    def _forward_argv(self, rec: dict[str, Any]) -> list[str]:
        argv = [kubectl()]
        if rec.get("context"):
            argv += ["--context", rec["context"]]
        return argv + ["--namespace", rec["namespace"], "port-forward", "--address", "127.0.0.1",
                       f"svc/{rec['name']}-head-svc", f"{rec['forward_port']}:8265"]

    # ---- up / scale / down ------------------------------------------------------------

    def _manifest(self, name: str, workers: int) -> dict[str, Any]:
        p = manifests.profile(self.options.get("profile") or self.profile_name)
        body = manifests.raycluster(name, workers, p, image=self.options.get("image"), namespace=self._ns())
        problems = manifests.kuberay_rules(body["spec"])
        if problems:  # the operator would reject it after a round trip; say so now
            raise UserError(f"the RayCluster would be rejected: {problems[0]}")
        return body

    def up(self, workers: int, timeout: float | None = None) -> None:
        timeout = timeout or self.default_timeout
        self._claim_state()
        kubectl()  # before anything is created: the port-forward needs it
        custom, _ = self._apis()
        name = self.options.get("name") or f"rayscale-{secrets.token_hex(3)}"
        body = self._manifest(name, workers)
        rec: dict[str, Any] = {
            "provider": self.name, "created": time.time(), "context": self.options.get("context"),
            "namespace": self._ns(), "name": name, "forward_port": procs.free_ports(1)[0],
        }
        rec["dashboard_url"] = f"http://127.0.0.1:{rec['forward_port']}"
        try:
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, rec["namespace"], PLURAL, body)
            except Exception as e:
                status = getattr(e, "status", None)
                if status == 404:
                    raise UserError(f"the cluster has no RayCluster API (ray.io/v1) in namespace {rec['namespace']}",
                                    INSTALL_OPERATOR) from None
                if status == 409:
                    raise UserError(f"a RayCluster named {name} already exists in {rec['namespace']}",
                                    "delete it, or let rayscale pick a fresh name") from None
                raise _api_error(e, "the API server refused the RayCluster",
                                 "check --context / --namespace and your RBAC rights on ray.io") from None
            rec["owned"] = True  # from here on, teardown deletes it
            self.state.write(rec)
            deadline = time.monotonic() + timeout
            self._wait_head(rec, deadline)
            self._fetch_token(rec, body)
            self._open_forward(rec)
            self.wait_ready(workers, max(1.0, deadline - time.monotonic()))
            wait_job_api(rec["dashboard_url"], self.state.token(), 60, str(self.state.path / "logs"))
        except BaseException:
            self._teardown(rec)
            self.state.clear(keep_logs=True)
            raise

    def _wait_head(self, rec: dict[str, Any], deadline: float) -> None:
        while True:
            pods = self._pods(rec, "head")
            if pods and _ready(pods[0]):
                return
            if time.monotonic() > deadline:
                why = _pending_reason(pods[0]) if pods else "no head pod was created (is the operator running?)"
                raise UserError(f"the head pod of {rec['name']} is not ready: {why}",
                                f"kubectl -n {rec['namespace']} describe pod -l ray.io/cluster={rec['name']}")
            time.sleep(1.0)

    def _fetch_token(self, rec: dict[str, Any], body: dict[str, Any]) -> None:
        """The operator writes a random token to a Secret named after the cluster."""
        _, core = self._apis(rec)
        secret = (body["spec"].get("authOptions") or {}).get("secretName") or rec["name"]
        try:
            data = core.read_namespaced_secret(secret, rec["namespace"]).data or {}
        except Exception as e:
            raise _api_error(e, f"cannot read the token Secret {secret}",
                             "your role needs `get` on secrets in this namespace") from None
        if "auth_token" not in data:
            raise UserError(f"Secret {secret} holds no auth_token", "is the operator KubeRay 1.7.0 or newer?")
        token_file = self.state.new_token()
        token_file.write_text(base64.b64decode(data["auth_token"]).decode().strip())

    def scale(self, workers: int, timeout: float | None = None) -> None:
        rec = self._record()
        obj = self._get(rec)
        if obj is None:
            raise UserError(f"RayCluster {rec['name']} no longer exists",
                            "run `rayscale cluster down` then `rayscale cluster up` again")
        groups = obj["spec"]["workerGroupSpecs"]
        # replicas for the operator, minReplicas / maxReplicas for the autoscaler: pinned
        # to N, so neither adds nor removes workers while the study measures N.
        groups[0].update(replicas=workers, minReplicas=workers, maxReplicas=workers)
        custom, _ = self._apis(rec)
        try:
            custom.patch_namespaced_custom_object(GROUP, VERSION, rec["namespace"], PLURAL, rec["name"],
                                                  {"spec": {"workerGroupSpecs": groups}})
        except Exception as e:
            raise _api_error(e, f"cannot resize RayCluster {rec['name']}", "check your RBAC rights on ray.io") from None
        self.wait_ready(workers, timeout)

    def _teardown(self, rec: dict[str, Any]) -> None:
        self._stop_forward(rec)
        if not rec.get("owned"):
            return  # never delete a RayCluster this provider did not create
        custom, _ = self._apis(rec)
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, rec["namespace"], PLURAL, rec["name"])
        except Exception as e:
            if getattr(e, "status", None) != 404:
                raise _api_error(e, f"cannot delete RayCluster {rec['name']}",
                                 f"delete it with kubectl -n {rec['namespace']} delete raycluster {rec['name']}") from None

    def is_running(self) -> bool:
        rec = self.state.read()
        return bool(rec and rec.get("provider") == self.name and self._get(rec) is not None)

    # ---- readiness / endpoint / status ------------------------------------------------

    def wait_ready(self, workers: int, timeout: float | None = None) -> None:
        rec = self._record()
        timeout = timeout or self.default_timeout
        deadline = time.monotonic() + timeout
        while True:
            pods = [p for p in self._pods(rec, "worker") if not _terminating(p)]
            ready = sum(1 for p in pods if _ready(p))
            alive = None
            if ready >= workers:
                self._ensure_forward(rec)
                alive = dashboard.alive_workers(rec["dashboard_url"], self.state.token())
                if alive == workers and ready == workers:
                    return
            if time.monotonic() > deadline:
                pending = [p for p in pods if not _ready(p)]
                why = f"; {pending[0].metadata.name}: {_pending_reason(pending[0])}" if pending else ""
                raise UserError(
                    f"{workers} workers wanted: {ready} pods Ready, "
                    f"{'?' if alive is None else alive} Ray workers alive after {timeout:.0f} s{why}",
                    f"kubectl -n {rec['namespace']} get pods -l ray.io/cluster={rec['name']}; or raise --timeout")
            time.sleep(1.0)

    def status(self) -> ClusterStatus:
        rec = self._record()
        self._ensure_forward(rec)
        pod_of = {p.status.pod_ip: p.metadata.name
                  for p in self._pods(rec, "head") + self._pods(rec, "worker") if p.status and p.status.pod_ip}
        return status_from_dashboard(self.name, rec["dashboard_url"], self.state.token(),
                                     f"read {self.state.path / 'logs' / 'forward.log'}", pod_of)


def _ready(pod) -> bool:
    conds = (pod.status.conditions if pod.status else None) or []
    return (pod.status.phase == "Running"
            and any(c.type == "Ready" and c.status == "True" for c in conds))


def _terminating(pod) -> bool:
    return pod.metadata.deletion_timestamp is not None


def _pending_reason(pod) -> str:
    """Why a pod is not running, in the scheduler's or kubelet's words."""
    st = pod.status
    for c in (st.conditions or []) if st else []:
        if c.status == "False" and c.message:
            return f"{c.reason}: {c.message}"
    for cs in (st.container_statuses or []) if st else []:
        if cs.state and cs.state.waiting and cs.state.waiting.reason:
            return f"{cs.state.waiting.reason}: {cs.state.waiting.message or ''}".strip(": ")
    return st.phase if st else "unknown"
