"""The kuberay provider: a RayCluster on any Kubernetes cluster that runs the KubeRay operator.

API work goes through the kubernetes Python client (the context and namespace the user
names): create the RayCluster rendered by rayscale.manifests, patch its worker group to
resize, read pods and the operator-made token Secret, delete it. The dashboard / Job API
stays on a ClusterIP Service; rayscale reaches it with `kubectl port-forward` under a
managed forward (rayscale.forward) that restarts it when it drops, a common KubeRay
complaint during long jobs. Readiness: worker pods Ready, then N Ray worker nodes ALIVE
as the dashboard reports them.

Its parts: kube_api.py (the client, its errors, the worker group's resize), kube_storage.py
(the results claim every pod mounts), gcs_ft.py (the head's GCS in a Redis).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import secrets
import time
from collections.abc import Callable
from typing import Any

from rayscale import extras, manifests, nodes, procs, runtime
from rayscale.errors import UserError
from rayscale.providers import gcs_ft
from rayscale.providers.base import (
    ClusterRecord,
    ClusterStatus,
    ForwardedProvider,
    Options,
    ProcRecord,
    flag,
    plural,
    say,
    status_from_dashboard,
)
from rayscale.providers.kube_api import (
    GROUP,
    INSTALL_OPERATOR,
    PLURAL,
    VERSION,
    ClusterGone,
    api_error,
    kubectl,
    load_api,
    missing_namespace,
    no_namespace,
    resolve_context,
    set_workers,
)
from rayscale.providers.kube_storage import ResultsClaim
from rayscale.providers.pod_health import (
    HEAD_DEATHS,
    WORKER_DEATHS,
    PodWatch,
    pending_reason,
    ready,
    terminating,
)
from rayscale.state import command

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


class KubeRayProvider(ResultsClaim, ForwardedProvider):
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
            raise api_error(
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

    def dry_run(self, workers: int) -> list[tuple[str, str]]:
        named = "" if self.state.is_default else f"{self.state.name}-"
        name = self.options.name or f"rayscale-{named}000000"
        claim = self.options.results_claim or manifests.RESULTS_CLAIM
        ns, p = self._ns(), self._profile
        where = f"namespace {ns}, context {self.options.context or 'the current one'}"
        drawn = "" if self.options.name else " (its last six characters drawn at up)"
        out = [
            (
                f"RayCluster {name}{drawn}: a head and {plural(workers, 'worker')}, "
                f"profile {p.name}, in {where}",
                manifests.to_yaml(self._manifest(name, workers, claim)),
            )
        ]
        if not self.options.results_claim:
            body = manifests.results_claim(p, ns, claim, self.options.storage_class)
            out.append(
                (
                    f"PersistentVolumeClaim {claim} for Tune's results (made if missing)",
                    manifests.to_yaml(body),
                )
            )
        redis = gcs_ft.parse(self.options.gcs_ft) if self.options.gcs_ft else None
        if redis and redis.deployed:
            image = self.options.redis_image or gcs_ft.IMAGE
            docs = [
                gcs_ft.deployment(name, ns, image),
                gcs_ft.service(name, ns),
                gcs_ft.network_policy(name, ns),
            ]
            out.append(
                (
                    f"the Redis that keeps the head's GCS, and Secret {gcs_ft.secret_name(name)} "
                    "with its password (drawn at up)",
                    manifests.to_yaml(*docs),
                )
            )
        return out

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
            if missing_namespace(e):
                raise no_namespace(rec["namespace"]) from None
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
            raise api_error(
                e,
                "the API server refused the RayCluster",
                "check --context / --namespace and your RBAC rights on ray.io",
            ) from None
        rec["owned"] = True  # from here on, teardown deletes it
        self.state.write(rec)
        self._wait_head(rec, deadline)
        self._fetch_token(rec, body)
        self._open_forward(rec)

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
            raise api_error(
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
        return gcs_ft.KitRedis(core, apps, networking, rec["namespace"], rec["name"], api_error)

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
            raise api_error(
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
                raise api_error(e, f"cannot delete RayCluster {rec['name']}", by_hand) from None
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
