"""The kuberay provider: a RayCluster on any Kubernetes cluster that runs the KubeRay operator.

API work goes through the kubernetes Python client (the context and namespace the user
names): create the RayCluster rendered by rayscale.manifests, patch its worker group to
resize, read pods and the operator-made token Secret, delete it. The dashboard / Job API
stays on a ClusterIP Service; rayscale reaches it with `kubectl port-forward` under a
managed forward (rayscale.forward) that restarts it when it drops, a common KubeRay
complaint during long jobs. Readiness: worker pods Ready, then N Ray worker nodes ALIVE
as the dashboard reports them.

Results storage: a PersistentVolumeClaim in the cluster's namespace (made here from the
profile unless one exists, or --results-claim names yours), checked before anything else
is created: a cloud cluster's pods run on separate nodes, so its claim must be
ReadWriteMany, and a class known to be block storage (EBS, PD, Azure Disk) cannot.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from rayscale import extras, manifests, nodes, procs, runtime
from rayscale.endpoint import api_timeout
from rayscale.errors import UserError
from rayscale.providers import gcs_ft
from rayscale.providers.base import (
    ClusterRecord,
    ClusterStatus,
    ForwardedProvider,
    Options,
    ProcRecord,
    flag,
    say,
    status_from_dashboard,
)
from rayscale.providers.pod_health import (
    HEAD_DEATHS,
    WORKER_DEATHS,
    PodWatch,
    pending_reason,
    ready,
    terminating,
)
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


# Provisioners of block storage: one node at a time, never ReadWriteMany.
RWO_ONLY = {
    "ebs.csi.aws.com",
    "kubernetes.io/aws-ebs",
    "pd.csi.storage.gke.io",
    "kubernetes.io/gce-pd",
    "disk.csi.azure.com",
    "kubernetes.io/azure-disk",
    "rancher.io/local-path",
    "openebs.io/local",
    "kubernetes.io/cinder",
    "cinder.csi.openstack.org",
    "dobs.csi.digitalocean.com",
}
RWX_HINT = (
    "pass --storage-class with a ReadWriteMany class (EFS: efs.csi.aws.com, Filestore: "
    "filestore.csi.storage.gke.io, Azure Files: file.csi.azure.com, NFS), or --results-claim NAME"
)


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


def _api_error(e: Exception, what: str, fix: str) -> UserError:
    status = getattr(e, "status", None)
    if status is None:  # no answer at all: urllib3's MaxRetryError, a refused connection
        return ClusterGone(
            f"{what}: the API server does not answer ({type(e).__name__})",
            "is the cluster up? (kind: `kind get clusters`; check `kubectl cluster-info`)",
        )
    if status == 403:  # RBAC: the API server's own words name the verb and the resource
        said = _status_body(e).get("message") or "403 Forbidden"
        return UserError(
            f"{what}: {said}",
            "ask for that right in this namespace (see yours: kubectl auth can-i --list -n NS)",
        )
    reason = getattr(e, "reason", "") or type(e).__name__
    return UserError(f"{what}: {status} {reason}".strip(), fix)


def _status_body(e: Exception) -> dict[str, Any]:
    """The API server's Status object of an ApiException ({} when there is none)."""
    try:
        return json.loads(getattr(e, "body", None) or "{}")
    except ValueError:
        return {}


def _missing_namespace(e: Exception) -> bool:
    """A 404 for a namespace that does not exist (not for a missing resource type)."""
    return (
        getattr(e, "status", None) == 404
        and (_status_body(e).get("details") or {}).get("kind") == "namespaces"
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
            raise _api_error(e, f"cannot read RayCluster {name}", "check the API server") from None
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
                raise _api_error(
                    e, f"cannot resize RayCluster {name}", "check your RBAC rights on ray.io"
                ) from None
    raise UserError(
        f"cannot resize RayCluster {name}: another writer changed it {CONFLICT_RETRIES} times in a row",
        "is a second rayscale or an autoscaler resizing it? stop it, then scale again",
    )


REDIS_IMAGE = gcs_ft.IMAGE  # named apart: in KubeRayOptions, gcs_ft is the field


@dataclasses.dataclass(frozen=True)
class KubeRayOptions(Options):
    image: str | None = flag("the kit's image [default rayscale:<version>]")
    context: str | None = flag(
        "the kubeconfig context [default: the current one; kind: kind-rayscale]"
    )
    profile: str | None = flag(
        "the pods' sizes and storage: cloud (8-vCPU nodes, ReadWriteMany), kind, small (a "
        "one-node cluster of a few cores: Burstable pods) [default: cloud; kind: kind]",
        choices=tuple(sorted(manifests.PROFILES)),
    )
    namespace: str | None = flag("the Kubernetes namespace [default: default]")
    storage_class: str | None = flag(
        "the StorageClass of the results claim rayscale makes; ReadWriteMany on a cloud "
        "[default: the cluster's default]"
    )
    results_claim: str | None = flag(
        "an existing PersistentVolumeClaim for Tune's storage [default: rayscale-results, "
        "made if missing]"
    )
    gcs_ft: str | None = flag(
        "keep the head's GCS in a Redis, so a replaced head takes the cluster back and the "
        "workers stay; `redis`: rayscale deploys one beside the cluster; a Redis of yours "
        "takes its password from $RAYSCALE_REDIS_PASSWORD or the file named by "
        "$RAYSCALE_REDIS_PASSWORD_FILE [default: off]",
        metavar="redis|redis[s]://HOST:PORT",
    )
    redis_image: str | None = flag(
        f"the image of the Redis `--gcs-ft redis` deploys [default: {REDIS_IMAGE}]", metavar="IMAGE"
    )
    name: str | None = None  # not a flag: the RayCluster's (default: the kit's)


class KubeRayRecord(ClusterRecord, total=False):
    context: str  # resolved at `up`: a later change of kubectl's context changes nothing
    namespace: str
    name: str  # the RayCluster's
    owned: bool  # created by this `up`: only then does teardown delete it
    results_claim: str
    made_claim: bool
    forward_port: int
    forward: ProcRecord  # the managed `kubectl port-forward`


class KubeRayProvider(ForwardedProvider):
    name = "kuberay"
    default_timeout = 600.0  # pods may wait for a node to be added to the Kubernetes cluster
    profile_name = "cloud"
    Options = KubeRayOptions

    def __init__(self, state, shape=None, api=None, **options: Any):
        extras.need_k8s(f"the {self.name} provider")
        super().__init__(state, shape, **options)
        # (custom, core, storage, apps, networking): injected by tests, else built from the kubeconfig
        self._api = api
        self._context = self.options.context

    # ---- plumbing ---------------------------------------------------------------------

    def _apis(self, rec: KubeRayRecord | None = None):
        if self._api is None:
            self._api, self._context = load_api((rec or {}).get("context") or self.options.context)
        return self._api[:2]

    @property
    def _profile(self) -> manifests.Profile:
        return manifests.profile(self.options.profile or self.profile_name)

    def _ns(self, rec: KubeRayRecord | None = None) -> str:
        return (rec or {}).get("namespace") or self.options.namespace or "default"

    def _get(self, rec: KubeRayRecord) -> dict[str, Any] | None:
        custom, _ = self._apis(rec)
        try:
            return custom.get_namespaced_custom_object(
                GROUP, VERSION, rec["namespace"], PLURAL, rec["name"]
            )
        except Exception as e:
            if getattr(e, "status", None) == 404:
                return None
            raise _api_error(
                e,
                f"cannot read RayCluster {rec['name']}",
                "check --context / --namespace and your access to ray.io resources",
            ) from None

    def _pods(self, rec: KubeRayRecord, node_type: str) -> list:
        _, core = self._apis(rec)
        sel = f"ray.io/cluster={rec['name']},ray.io/node-type={node_type}"
        return list(core.list_namespaced_pod(rec["namespace"], label_selector=sel).items)

    def _forward_argv(self, rec: KubeRayRecord) -> list[str]:
        argv = [kubectl()]
        if rec.get("context"):
            argv += ["--context", rec["context"]]
        return argv + [
            "--namespace",
            rec["namespace"],
            "port-forward",
            "--address",
            "127.0.0.1",
            f"svc/{rec['name']}-head-svc",
            f"{rec['forward_port']}:{runtime.DASHBOARD_PORT}",
        ]

    # ---- up / scale / down ------------------------------------------------------------

    def _manifest(self, name: str, workers: int, claim: str) -> dict[str, Any]:
        p = self._profile
        if p.image_required and not self.options.image:
            raise UserError(
                f"the {p.name} profile has no public image ({p.image} is a placeholder)",
                "push the kit's image where your nodes can pull it (make image IMAGE=REG/rayscale:"
                f"{p.image.rsplit(':', 1)[1]} && docker push ...) and pass --image",
            )
        # Pinned: min = max = replicas = N, so the autoscaler neither adds nor removes workers
        # while rayscale holds this size (a job's demand could grow the cluster otherwise).
        body = manifests.raycluster(
            name,
            workers,
            p,
            image=self.options.image,
            namespace=self._ns(),
            claim=claim,
            max_workers=workers,
        )
        redis = gcs_ft.parse(self.options.gcs_ft) if self.options.gcs_ft else None
        if redis:
            body["spec"]["gcsFaultToleranceOptions"] = gcs_ft.options(redis, name)
        if self.options.redis_image and not (redis and redis.deployed):
            raise UserError(
                "--redis-image is for the Redis that `--gcs-ft redis` deploys",
                "add --gcs-ft redis, or drop --redis-image",
            )
        problems = manifests.kuberay_rules(body["spec"])
        if (body["spec"].get("authOptions") or {}).get("mode") != "token":
            problems.append("authOptions.mode must be token")
        if problems:  # the operator would reject it after a round trip; say so now
            raise UserError(f"the RayCluster would be rejected: {problems[0]}")
        return body

    # ---- results storage --------------------------------------------------------------

    def _ensure_claim(self, ns: str) -> tuple[str, bool]:
        """The results claim the pods mount: (name, created here). Checked before the
        RayCluster exists: a claim the pods cannot share fails now, not after 600 s."""
        _, core = self._apis()
        p = self._profile
        name = self.options.results_claim or manifests.RESULTS_CLAIM
        try:
            claim = core.read_namespaced_persistent_volume_claim(name, ns)
        except Exception as e:
            if getattr(e, "status", None) != 404:
                raise _api_error(
                    e,
                    f"cannot read PersistentVolumeClaim {name}",
                    "your role needs `get` on persistentvolumeclaims in this namespace",
                ) from None
            if _missing_namespace(e):
                raise UserError(
                    f"namespace {ns!r} does not exist",
                    f"create it (kubectl create namespace {ns}) or pass another --namespace",
                ) from None
            claim = None
        if claim is not None:
            modes = list(claim.spec.access_modes or [])
            if p.results_access == "ReadWriteMany" and "ReadWriteMany" not in modes:
                raise UserError(
                    f"PersistentVolumeClaim {name} is {', '.join(modes) or 'of no access mode'}, "
                    "but pods on separate nodes must share it (ReadWriteMany)",
                    RWX_HINT,
                )
            return name, False
        if self.options.results_claim:
            raise UserError(
                f"PersistentVolumeClaim {name} does not exist in namespace {ns}",
                "create it (ReadWriteMany), or leave out --results-claim and rayscale makes one",
            )
        body = manifests.results_claim(p, ns, name, self.options.storage_class)
        if p.results_access == "ReadWriteMany":
            self._check_rwx_class(body["spec"].get("storageClassName"))
        try:
            core.create_namespaced_persistent_volume_claim(ns, body)
        except Exception as e:
            if _missing_namespace(e):
                raise UserError(
                    f"namespace {ns!r} does not exist",
                    f"create it (kubectl create namespace {ns}) or pass another --namespace",
                ) from None
            raise _api_error(
                e,
                f"cannot create PersistentVolumeClaim {name}",
                "your role needs `create` on persistentvolumeclaims, or pass --results-claim",
            ) from None
        return name, True

    def _check_rwx_class(self, class_name: str | None) -> None:
        """Refuse a StorageClass whose provisioner is block storage (never ReadWriteMany).
        Listing classes needs cluster-wide read; without it the claim is tried as asked."""
        storage = self._api[2] if len(self._api) > 2 else None
        if storage is None:
            return
        try:
            classes = storage.list_storage_class().items
        except Exception:
            return
        if class_name:
            sc = next((c for c in classes if c.metadata.name == class_name), None)
            if sc is None:
                raise UserError(
                    f"StorageClass {class_name!r} does not exist "
                    f"(the cluster has: {', '.join(c.metadata.name for c in classes) or 'none'})",
                    RWX_HINT,
                )
        else:
            default = [
                c
                for c in classes
                if (c.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class")
                == "true"
            ]
            if not default:
                raise UserError(
                    "the cluster has no default StorageClass for the results claim", RWX_HINT
                )
            sc = default[0]
        if sc.provisioner in RWO_ONLY:
            raise UserError(
                f"StorageClass {sc.metadata.name} ({sc.provisioner}) cannot do ReadWriteMany, "
                "and the cluster's pods on separate nodes must share the results volume",
                RWX_HINT,
            )

    def _plan(self, workers: int) -> KubeRayRecord:
        kubectl()  # before anything is created: the port-forward needs it
        named = "" if self.state.is_default else f"{self.state.name}-"
        name = self.options.name or f"rayscale-{named}{secrets.token_hex(3)}"
        self._manifest(
            name, workers, manifests.RESULTS_CLAIM
        )  # refuse a bad request before any API call
        self._apis()
        if self._context is None:  # an injected API (tests) still records the kubeconfig's context
            self._context = resolve_context(None)[1]
        claim, made_claim = self._ensure_claim(self._ns())
        port = procs.free_ports(1)[0]
        return {
            # The resolved context, never "the current one": kubectl's may change later.
            "provider": self.name,
            "created": time.time(),
            "context": self._context,
            "namespace": self._ns(),
            "name": name,
            "forward_port": port,
            "dashboard_url": f"http://127.0.0.1:{port}",
            "results_claim": claim,
            "made_claim": made_claim,
        }

    def _create(self, rec: KubeRayRecord, workers: int, deadline: float) -> None:
        body = self._manifest(rec["name"], workers, rec["results_claim"])
        if self.options.gcs_ft:
            self._make_redis(rec, deadline)
        try:
            self._apis(rec)[0].create_namespaced_custom_object(
                GROUP, VERSION, rec["namespace"], PLURAL, body
            )
        except Exception as e:
            status = getattr(e, "status", None)
            if _missing_namespace(e):
                raise UserError(
                    f"namespace {rec['namespace']!r} does not exist",
                    f"create it (kubectl create namespace {rec['namespace']}) "
                    "or pass another --namespace",
                ) from None
            if status == 404:
                raise UserError(
                    "the cluster has no RayCluster API (ray.io/v1): the KubeRay CRDs are not "
                    "installed",
                    INSTALL_OPERATOR,
                ) from None
            if status == 409:
                raise UserError(
                    f"a RayCluster named {rec['name']} already exists in {rec['namespace']}",
                    "delete it, or let rayscale pick a fresh name",
                ) from None
            raise _api_error(
                e,
                "the API server refused the RayCluster",
                "check --context / --namespace and your RBAC rights on ray.io",
            ) from None
        rec["owned"] = True  # from here on, teardown deletes it
        self.state.write(rec)
        self._wait_head(rec, deadline)
        self._fetch_token(rec, body)
        self._open_forward(rec)

    def _undo_plan(self, rec: KubeRayRecord) -> None:
        if rec.get("made_claim"):  # an empty claim this failed `up` made: nothing is lost with it
            with contextlib.suppress(Exception):
                self._delete_claim(rec)

    def _delete_claim(self, rec: KubeRayRecord) -> None:
        """Delete the results claim this `up` made; one already gone is fine."""
        claim = rec["results_claim"]
        try:
            self._apis(rec)[1].delete_namespaced_persistent_volume_claim(claim, rec["namespace"])
        except Exception as e:
            if getattr(e, "status", None) != 404:
                raise _api_error(
                    e,
                    f"cannot delete PersistentVolumeClaim {claim}",
                    f"kubectl -n {rec['namespace']} delete pvc {claim}",
                ) from None

    def _on_up(self, rec: KubeRayRecord) -> None:
        self._check_results_writable(rec)

    def _check_results_writable(self, rec: KubeRayRecord) -> None:
        """Whether the pods' user can write the results volume, asked on the head by a
        one-line job: NFS shares start root-owned 0755 and NFS CSI drivers skip fsGroup,
        so a claim can bind and mount and still refuse every checkpoint."""
        from rayscale.jobs import Jobs

        path = manifests.RESULTS
        probe = (
            f'if test -w {path}; then echo RAYSCALE_WRITABLE; else echo "uid $(id -u)"; '
            f"ls -ldn {path}; fi"
        )
        j = Jobs(self.endpoint())
        try:
            job_id = j.submit_command([probe], metadata={"rayscale": "can the pods write results"})
            status = j.wait(job_id, 120)
            log = j.logs(job_id)
        except Exception:
            return  # the check cannot run here; the first job would say the same later
        # Ray echoes the entrypoint into the log (buffered, so it may land after the
        # probe's own lines): only the probe's lines count.
        lines = [x.strip() for x in log.strip().splitlines()]
        lines = [x for x in lines if x and not x.startswith("Running entrypoint for job")]
        if status != "SUCCEEDED" or "RAYSCALE_WRITABLE" in lines:
            return
        seen = " ".join(lines[-2:])
        cls = self._claim_class(rec)
        raise UserError(
            f"the results volume (claim {rec['results_claim']}"
            + (f", StorageClass {cls}" if cls else "")
            + f") is not writable by the pods' user: {seen}",
            "use a class whose volumes the pods' fsGroup can write, give the share to uid "
            "1000 (NFS: chown 1000 the export, or export it with all_squash,anonuid=1000), "
            "or pass --results-claim with a claim uid 1000 can write",
        )

    def _claim_class(self, rec: KubeRayRecord) -> str | None:
        try:
            claim = self._apis(rec)[1].read_namespaced_persistent_volume_claim(
                rec["results_claim"], rec["namespace"]
            )
            return claim.spec.storage_class_name
        except Exception:
            return None

    def _operator_refusal(self, rec: KubeRayRecord) -> str | None:
        """What the operator said when it will make no pods for the RayCluster: a Warning
        event of its validation (InvalidRayClusterSpec / Metadata), or a
        RayClusterReplicaFailure condition; None where it said nothing, or may not be asked."""
        _, core = self._apis(rec)
        try:
            events = core.list_namespaced_event(
                rec["namespace"], field_selector=f"involvedObject.name={rec['name']}"
            ).items
        except Exception:
            events = []
        for ev in events:
            if ev.type == "Warning" and (ev.reason or "").startswith("InvalidRayCluster"):
                return f"{ev.reason}: {ev.message}"
        obj = self._get(rec) or {}
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "RayClusterReplicaFailure" and c.get("status") == "True":
                return f"{c.get('reason')}: {c.get('message')}"
        return None

    def _tail(self, rec: KubeRayRecord) -> Callable[[Any], str]:
        """The last lines of a pod's Ray container, while the pod is there to ask."""
        _, core = self._apis(rec)

        def tail(pod) -> str:
            try:
                return core.read_namespaced_pod_log(
                    pod.metadata.name,
                    rec["namespace"],
                    container=pod.spec.containers[0].name,
                    tail_lines=20,
                )
            except Exception:
                return ""  # gone already: the operator deleted it

        return tail

    def _wait_head(self, rec: KubeRayRecord, deadline: float) -> None:
        watch = PodWatch(self._tail(rec))
        describe = f"kubectl -n {rec['namespace']} describe pod -l ray.io/cluster={rec['name']}"
        while True:
            pods = self._pods(rec, "head")
            watch.look(pods)
            loop = watch.crash_loop(HEAD_DEATHS)
            if loop:
                raise UserError(
                    f"the head pod of {rec['name']} cannot start: {loop}",
                    f"kubectl -n {rec['namespace']} get events --field-selector "
                    f"involvedObject.name={rec['name']}; {describe}",
                )
            live = [p for p in pods if not terminating(p)]
            if live and ready(live[0]):
                return
            if not live:
                refused = self._operator_refusal(rec)
                if refused:
                    raise UserError(
                        f"the operator refused RayCluster {rec['name']}: {refused}",
                        "fix what it names; its events: kubectl -n "
                        f"{rec['namespace']} describe raycluster {rec['name']}",
                    )
            hopeless = watch.verdict(live[0]) if live else None
            if hopeless:
                raise UserError(f"the head pod of {rec['name']} cannot start: {hopeless}", describe)
            if time.monotonic() > deadline:
                why = (
                    pending_reason(live[0])
                    if live
                    else "no head pod was created (is the operator running?)"
                )
                raise UserError(f"the head pod of {rec['name']} is not ready: {why}", describe)
            time.sleep(1.0)

    def _fetch_token(self, rec: KubeRayRecord, body: dict[str, Any]) -> None:
        """The operator writes a random token to a Secret named after the cluster."""
        _, core = self._apis(rec)
        secret = (body["spec"].get("authOptions") or {}).get("secretName") or rec["name"]
        try:
            data = core.read_namespaced_secret(secret, rec["namespace"]).data or {}
        except Exception as e:
            if getattr(e, "status", None) == 404:
                raise UserError(
                    f"the operator made no token Secret {secret}",
                    "is the operator KubeRay 1.7.0 or newer? (kubectl get deploy kuberay-operator "
                    "-o jsonpath='{..image}')",
                ) from None
            if getattr(e, "status", None) == 403:
                raise UserError(
                    f"not allowed to read the token Secret {secret}",
                    "your role needs `get` on secrets in this namespace",
                ) from None
            raise _api_error(
                e, f"cannot read the token Secret {secret}", "check the API server"
            ) from None
        if "auth_token" not in data:
            raise UserError(
                f"Secret {secret} holds no auth_token", "is the operator KubeRay 1.7.0 or newer?"
            )
        token_file = self.state.new_token()
        token_file.write_text(base64.b64decode(data["auth_token"]).decode().strip())

    def scale(self, workers: int, timeout: float | None = None) -> None:
        rec = self._record()
        custom, _ = self._apis(rec)
        set_workers(custom, rec["namespace"], rec["name"], workers, self._to_remove(rec, workers))
        self.wait_ready(workers, timeout)

    def _to_remove(self, rec: KubeRayRecord, workers: int) -> list[str]:
        """The worker pods a scale-down removes. The kit resizes between jobs (a study's
        points), so every worker is idle then; of them, pods not Ready go first, then the
        newest."""
        pods = [p for p in self._pods(rec, "worker") if not terminating(p)]
        if len(pods) <= workers:
            return []
        pods.sort(key=lambda p: (ready(p), -p.metadata.creation_timestamp.timestamp()))
        return [p.metadata.name for p in pods[: len(pods) - workers]]

    def _kit_redis(self, rec: KubeRayRecord) -> gcs_ft.KitRedis:
        self._apis(rec)
        core, apps, networking = self._api[1], self._api[3], self._api[4]
        return gcs_ft.KitRedis(core, apps, networking, rec["namespace"], rec["name"], _api_error)

    def _make_redis(self, rec: KubeRayRecord, deadline: float) -> None:
        """The Redis password, in a Secret the head's REDIS_PASSWORD refers to; for
        `--gcs-ft redis`, the Redis itself, Ready before the head needs it."""
        redis = gcs_ft.parse(self.options.gcs_ft)
        password = redis.password or (secrets.token_urlsafe(24) if redis.deployed else None)
        if not password:
            return
        _, core = self._apis(rec)
        try:
            core.create_namespaced_secret(
                rec["namespace"], gcs_ft.secret(password, rec["name"], rec["namespace"])
            )
        except Exception as e:
            raise _api_error(
                e,
                f"cannot create Secret {gcs_ft.secret_name(rec['name'])} for the Redis password",
                "your role needs `create` on secrets in this namespace",
            ) from None
        rec["redis_secret"] = gcs_ft.secret_name(rec["name"])
        self.state.write(rec)
        if not redis.deployed:
            return
        rec["redis"] = gcs_ft.secret_name(rec["name"])
        self.state.write(rec)  # from here on, teardown deletes its Service and Deployment
        kit = self._kit_redis(rec)
        kit.create(self.options.redis_image or gcs_ft.IMAGE)
        say(f"waiting for Redis {rec['redis']} (GCS fault tolerance) ...")
        kit.wait_ready(deadline, self._tail(rec))

    def _teardown(self, rec: KubeRayRecord) -> None:
        self._stop_forward(rec)
        deleting = bool(rec.get("owned")) and self._delete_raycluster(rec)
        if not rec.get("redis_secret"):
            return
        if deleting:  # KubeRay's Redis cleanup Job needs the Redis and its Secret
            self._await_redis_cleanup(rec)
        if rec.get("redis"):
            self._kit_redis(rec).delete()
        with contextlib.suppress(Exception):
            self._apis(rec)[1].delete_namespaced_secret(rec["redis_secret"], rec["namespace"])

    def _delete_raycluster(self, rec: KubeRayRecord) -> bool:
        """Ask for the RayCluster's deletion; False where it is gone already. Raises
        UserError where the API server cannot be reached: the record stays for a retry."""
        by_hand = f"kubectl --context {rec.get('context')} -n {rec['namespace']} delete raycluster {rec['name']}"
        try:
            custom, _ = self._apis(rec)
            custom.delete_namespaced_custom_object(
                GROUP, VERSION, rec["namespace"], PLURAL, rec["name"]
            )
            return True
        except Exception as e:
            status = getattr(e, "status", None)
            if status is None:
                # No answer (an API server down, a context gone): the RayCluster may still run.
                gone = (
                    e.problem
                    if isinstance(e, UserError)
                    else f"the API server does not answer ({type(e).__name__})"
                )
                raise UserError(
                    f"the Kubernetes cluster is unreachable ({gone}), so RayCluster "
                    f"{rec['name']} may still run",
                    f"once it answers; or delete it yourself ({by_hand}); if that cluster is "
                    f"gone for good, {command('cluster down --forget')} clears the record",
                ) from None
            if status != 404:
                raise _api_error(e, f"cannot delete RayCluster {rec['name']}", by_hand) from None
            return False

    def redis_cleanup_wait_s(self, rec: KubeRayRecord) -> float:
        return gcs_ft.CLEANUP_WAIT_S

    def _await_redis_cleanup(self, rec: KubeRayRecord) -> None:
        """Until the RayCluster is gone: KubeRay's finalizer holds it while a Job deletes
        the cluster's keys from Redis."""
        wait_s = self.redis_cleanup_wait_s(rec)
        deadline, said = time.monotonic() + wait_s, False
        while wait_s > 0:
            try:
                if self._get(rec) is None:
                    return
            except UserError:
                return
            if not said:
                say("waiting for KubeRay to delete the cluster's keys from Redis ...")
                said = True
            if time.monotonic() > deadline:
                say(
                    f"RayCluster {rec['name']} is still held by KubeRay's Redis cleanup after "
                    f"{wait_s:.0f} s; deleting the Redis anyway. If it stays: kubectl -n "
                    f"{rec['namespace']} patch raycluster {rec['name']} --type json -p "
                    """'[{"op":"remove","path":"/metadata/finalizers"}]'"""
                )
                return
            time.sleep(1.0)

    def kept_results(self, rec: KubeRayRecord) -> str | None:
        if not rec.get("owned") or not rec.get("results_claim"):
            return None
        return (
            f"results kept in PersistentVolumeClaim {rec['results_claim']} in namespace "
            f"{rec['namespace']} (`cluster down --delete-results` deletes it)"
        )

    def _delete_results(self, rec: KubeRayRecord) -> str:
        claim = rec.get("results_claim")
        if not rec.get("owned") or not claim:
            return "no results claim of this cluster's; nothing deleted"
        if not rec.get("made_claim"):
            return f"PersistentVolumeClaim {claim} is yours (--results-claim): kept"
        self._delete_claim(rec)
        return f"results deleted: PersistentVolumeClaim {claim} in namespace {rec['namespace']}"

    def is_running(self) -> bool:
        rec = self.state.read()
        if not rec or rec.get("provider") != self.name:
            return False
        try:
            return self._get(rec) is not None
        except ClusterGone:
            return False  # its context or API server is gone: the record is stale

    # ---- readiness / endpoint / status ------------------------------------------------

    def wait_ready(self, workers: int, timeout: float | None = None) -> None:
        rec = self._record()
        timeout = timeout or self.default_timeout
        deadline = time.monotonic() + timeout
        watch = PodWatch(self._tail(rec))
        while True:
            every = self._pods(rec, "worker")
            watch.look(every)
            loop = watch.crash_loop(WORKER_DEATHS)
            if loop:
                raise UserError(
                    f"the worker pods of {rec['name']} cannot start: {loop}",
                    f"kubectl -n {rec['namespace']} describe pod -l ray.io/cluster={rec['name']}",
                )
            pods = [p for p in every if not terminating(p)]
            n_ready = sum(1 for p in pods if ready(p))
            for p in pods:
                hopeless = watch.verdict(p)
                if hopeless:
                    raise UserError(
                        f"worker pod {p.metadata.name} cannot start: {hopeless}",
                        f"kubectl -n {rec['namespace']} describe pod {p.metadata.name}",
                    )
            alive = None
            if n_ready >= workers:
                self._ensure_forward(rec)
                alive = nodes.alive_workers(rec["dashboard_url"], self.state.token())
                if alive == workers and n_ready == workers:
                    return
            if time.monotonic() > deadline:
                pending = [p for p in pods if not ready(p)]
                why = (
                    f"; {pending[0].metadata.name}: {pending_reason(pending[0])}" if pending else ""
                )
                if len(pods) > workers:
                    why += (
                        f"; {len(pods) - workers} pods over the target, not yet deleted by the "
                        "operator (its log: kubectl logs deploy/kuberay-operator)"
                    )
                raise UserError(
                    f"{workers} workers wanted: {n_ready} pods Ready, "
                    f"{'?' if alive is None else alive} Ray workers alive after {timeout:.0f} s{why}",
                    f"kubectl -n {rec['namespace']} get pods -l ray.io/cluster={rec['name']}; or raise --timeout",
                )
            time.sleep(1.0)

    def status(self) -> ClusterStatus:
        rec = self._record()
        token = self._reach(rec)
        pod_of = {
            p.status.pod_ip: p.metadata.name
            for p in self._pods(rec, "head") + self._pods(rec, "worker")
            if p.status and p.status.pod_ip
        }
        return status_from_dashboard(
            self.name,
            rec["dashboard_url"],
            token,
            f"read {self.state.path / 'logs' / 'forward.log'}",
            pod_of,
        )
