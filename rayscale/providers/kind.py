"""The kind provider: a Kubernetes cluster in Docker on this machine, then KubeRay on it.

up = create the kind cluster if it is missing (k8s/kind-config.yaml, plus its volumes
mounted from results/kind-<name> on this machine, so that the results outlive `kind delete
cluster`); unless the KubeRay
operator 1.7.0 is deployed there already, pull its Helm chart once, apply the CRDs it
holds server-side and install the operator from it (k8s/operator-values.yaml); build the
kit's image if Docker lacks it and `kind load` it, then hand over to the
kuberay provider (context kind-<name>, the "kind" manifest profile). down deletes the
RayCluster, and the kind cluster too if this `up` created it.

It never falls back to another provider: when a tool is missing it says which, how to
install it, and that `make cluster-up PROVIDER=local` needs none of them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from pathlib import Path

from rayscale import manifests, procs, runtime
from rayscale.errors import UserError
from rayscale.procs import tool
from rayscale.providers.base import GIB, say
from rayscale.providers.docker import engine_info
from rayscale.providers.kuberay import KubeRayOptions, KubeRayProvider, KubeRayRecord
from rayscale.state import command

ROOT = Path(__file__).resolve().parent.parent.parent
KIND_CLUSTER = "rayscale"
CHART = "kuberay-operator"
HELM_REPO = "https://ray-project.github.io/kuberay-helm/"
INSTALL = {
    "docker": "https://docs.docker.com/engine/install/ (Debian: apt-get install docker.io)",
    "kind": "go install sigs.k8s.io/kind@v0.33.0, or https://kind.sigs.k8s.io/docs/user/quick-start/",
    "kubectl": "https://kubernetes.io/docs/tasks/tools/",
    "helm": "https://helm.sh/docs/intro/install/",
}
# Beyond the Ray pods: the control plane, the operator and the autoscaler sidecar.
KIND_OVERHEAD_GIB = 1.5
# CPU requests beyond the Ray containers': the control plane (apiserver 250m, controller
# manager 200m, scheduler 100m, etcd 100m, CoreDNS 2x100m, kindnet 100m), the operator
# (100m) and the autoscaler sidecar (500m). Pods are scheduled on requests.
KIND_OVERHEAD_CPUS = 1.55


def missing_tools() -> list[str]:
    return [t for t in INSTALL if not tool(t)]


@dataclasses.dataclass(frozen=True)
class KindOptions(KubeRayOptions):
    kind_cluster: str | None = None  # not a flag: the kind cluster's name (default rayscale)
    # not a flag: where a kind cluster `up` creates keeps its volumes on this machine
    volumes_dir: str | None = None

    def __post_init__(self) -> None:
        # The CLI passes None for what was not given; kind's defaults follow its cluster name.
        kind = self.kind_cluster or KIND_CLUSTER
        object.__setattr__(self, "kind_cluster", kind)
        object.__setattr__(self, "context", self.context or f"kind-{kind}")
        object.__setattr__(self, "namespace", self.namespace or "default")
        volumes = self.volumes_dir or Path.cwd() / "results" / f"kind-{kind}"
        object.__setattr__(self, "volumes_dir", str(Path(volumes).resolve()))


class KindRecord(KubeRayRecord, total=False):
    kind_cluster: str
    created_kind: bool  # this `up` created the kind cluster: `down` deletes it too
    volumes_dir: str  # where that cluster's volumes are on this machine


class KindProvider(KubeRayProvider):
    name = "kind"
    profile_name = "kind"
    one_machine = True
    Options = KindOptions

    def __init__(self, state, shape=None, api=None, **options):
        # One kind cluster per rayscale cluster: `down` deletes the kind cluster it made.
        named = KIND_CLUSTER if state.is_default else f"{KIND_CLUSTER}-{state.name}"
        options.setdefault("kind_cluster", named)
        super().__init__(state, shape, api, **options)

    @property
    def kind_cluster(self) -> str:
        return self.options.kind_cluster

    @property
    def image(self) -> str:
        return self.options.image or manifests.PROFILES["kind"].image

    def preflight(self) -> None:
        gone = missing_tools()
        if gone:
            how = "; ".join(f"{t}: {INSTALL[t]}" for t in gone)
            raise UserError(
                f"the kind provider needs {', '.join(gone)}, not found on PATH ({how})",
                "or run without Kubernetes: make cluster-up PROVIDER=local",
            )

    def check_fits(self, workers: int) -> None:
        self.preflight()
        p = manifests.PROFILES["kind"]
        info = engine_info()
        need = KIND_OVERHEAD_GIB + _gib(p.head_memory) + workers * _gib(p.worker_memory)
        have = info.get("MemTotal", 0) / GIB
        if have and need > have:
            raise UserError(
                f"{workers} workers need about {need:.1f} GiB but Docker has {have:.1f} GiB",
                "give Docker more memory (Docker Desktop: Settings > Resources) or use fewer --workers",
            )
        # The scheduler places pods on their CPU requests: short of them, a worker stays
        # Pending and `up` would only fail after its timeout.
        need_cpus = KIND_OVERHEAD_CPUS + float(p.head_cpu) + workers * float(p.worker_cpu)
        have_cpus = info.get("NCPU", 0)
        if have_cpus and need_cpus > have_cpus:
            raise UserError(
                f"{workers} workers need about {need_cpus:.1f} CPUs on kind but Docker has {have_cpus}",
                "give Docker more CPUs (Docker Desktop: Settings > Resources), use fewer --workers, "
                "or run without Kubernetes: make cluster-up PROVIDER=local",
            )

    # ---- the commands up runs, in order (read by tests and by scripts/e2e-kind.sh) ------

    def commands(
        self,
        create: bool,
        build: bool,
        operator: str | None = None,
        chart_dir: str = "chart",
        config: str | None = None,
    ) -> list[list[str]]:
        """operator: the kuberay-operator chart version deployed there (None: none is);
        config: the kind config to create the cluster with (default k8s/kind-config.yaml)."""
        kind, kubectl, helm = (
            tool("kind") or "kind",
            tool("kubectl") or "kubectl",
            tool("helm") or "helm",
        )
        cmds = []
        if create:
            cmds.append(
                [
                    kind,
                    "create",
                    "cluster",
                    "--name",
                    self.kind_cluster,
                    "--config",
                    config or str(ROOT / "k8s" / "kind-config.yaml"),
                    "--wait",
                    "120s",
                ]
            )
        if operator != manifests.KUBERAY_VERSION:
            chart = f"{chart_dir}/{CHART}"
            cmds += [
                [helm, "repo", "add", "--force-update", "kuberay", HELM_REPO],
                # One download: the chart holds the CRDs of its version (crds/).
                [helm, "pull", f"kuberay/{CHART}", "--version", manifests.KUBERAY_VERSION,
                 "--untar", "--untardir", chart_dir],
                # Helm installs crds/ only on a first install and never upgrades them; and
                # they are too large for client-side apply (annotation limit): server-side.
                [kubectl, "--context", self.options.context, "apply", "--server-side",
                 "--force-conflicts", "-f", f"{chart}/crds"],
                [helm, "--kube-context", self.options.context, "upgrade", "--install", CHART,
                 chart, "--skip-crds", "--values", str(ROOT / "k8s" / "operator-values.yaml"),
                 "--wait", "--timeout", "5m"],
            ]  # fmt: skip
        if build:
            cmds.append(["make", "-C", str(ROOT), "image", f"IMAGE={self.image}"])
        return cmds

    def operator_version(self) -> str | None:
        """The kuberay-operator chart version deployed in the context (Helm's release list),
        or None where there is none or Helm cannot tell (then `up` installs it)."""
        p = subprocess.run(
            [tool("helm") or "helm", "--kube-context", self.options.context, "list",
             "--all-namespaces", "--filter", f"^{CHART}$", "--output", "json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        try:
            releases = json.loads(p.stdout) if p.returncode == 0 else []
        except ValueError:
            return None
        for r in releases:
            chart = str(r.get("chart", ""))
            if r.get("status") == "deployed" and chart.startswith(f"{CHART}-"):
                return chart[len(CHART) + 1 :]
        return None

    def load_commands(self, archive: str) -> tuple[list[str], list[list[str]]]:
        """`kind load docker-image`, and its fallback: Docker engines on the containerd image
        store (Docker 29's default) make it fail (kind issue 3795); an archive always loads."""
        kind, docker = tool("kind") or "kind", tool("docker") or "docker"
        return (
            [kind, "load", "docker-image", self.image, "--name", self.kind_cluster],
            [
                [docker, "save", "-o", archive, self.image],
                [kind, "load", "image-archive", archive, "--name", self.kind_cluster],
            ],
        )

    def _load_image(self, log: Path) -> None:
        # beside the record: a killed `up` leaks no GBs in /tmp
        archive = self.state.path / "image.tar"
        first, fallback = self.load_commands(str(archive))
        try:
            if procs.run_logged(first, log, timeout=900, check=False) != 0:
                for argv in fallback:
                    procs.run_logged(argv, log, timeout=900)
        finally:
            archive.unlink(missing_ok=True)

    def existing_clusters(self) -> list[str]:
        """kind's clusters; a failure is an error, never "none": `up` must not create (and on
        failure delete) a cluster named like one it could not see."""
        p = subprocess.run(
            [tool("kind"), "get", "clusters"], capture_output=True, text=True, timeout=60
        )
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(
                f"`kind get clusters` failed: {last}", "is Docker running? (`docker info`)"
            )
        return p.stdout.split()

    def _plan(self, workers: int) -> KindRecord:
        """The kind cluster, KubeRay and the image first (what the RayCluster needs), then
        kuberay's plan; a kind cluster made here goes again if any of it fails."""
        create = self.kind_cluster not in self.existing_clusters()
        build = not subprocess.run(
            [tool("docker"), "images", "-q", self.image], capture_output=True, text=True, timeout=60
        ).stdout.strip()
        log = self.state.logs_dir / "kind-up.log"
        config = self.write_config() if create else None
        if create:  # recorded before kind runs: `down` finds a cluster a killed `up` left
            self.state.write(
                {
                    "provider": self.name,
                    "created": time.time(),
                    "context": self.options.context,
                    "kind_cluster": self.kind_cluster,
                    "created_kind": True,
                    "volumes_dir": self.options.volumes_dir,
                }
            )
        try:
            operator = None if create else self.operator_version()
            # in the state dir, not /tmp: an `up` killed mid-download leaves nothing outside it
            chart_dir = self.state.path / "chart"
            shutil.rmtree(chart_dir, ignore_errors=True)
            chart_dir.mkdir(parents=True)
            try:
                for argv in self.commands(create, build, operator, str(chart_dir), config):
                    procs.run_logged(argv, log, timeout=900)
            finally:
                shutil.rmtree(chart_dir, ignore_errors=True)
            self._load_image(log)
            rec: KindRecord = {**super()._plan(workers)}
        except BaseException:
            if create:
                try:
                    self._delete_kind(self.kind_cluster, log)
                except UserError as e:  # the record stays: `down` retries
                    say(
                        f"the kind cluster this up made is not deleted: {e.line()}; "
                        f"run {command('cluster down')} to retry"
                    )
                    raise
                self.state.clear(keep_logs=True)
            raise
        rec.update(kind_cluster=self.kind_cluster, created_kind=create)
        if create:
            rec["volumes_dir"] = self.options.volumes_dir
        return rec

    def dry_run(self, workers: int) -> list[tuple[str, str]]:
        config = str(self.state.path / "kind-config.yaml")
        chart_dir = str(self.state.path / "chart")
        first, fallback = self.load_commands(str(self.state.path / "image.tar"))
        steps = [*self.commands(True, True, None, chart_dir, config), first]
        kind = manifests.kind_config(self.kind_cluster, self.options.volumes_dir)
        return [
            (
                f"kind cluster {self.kind_cluster}, its config written to {config}",
                manifests.to_yaml(kind),
            ),
            (
                "the set-up, each step only where needed: the kind cluster if it does not "
                f"exist, KubeRay {manifests.KUBERAY_VERSION} if that chart is not deployed, the "
                "image if it is not built; then the image loaded into the node",
                "\n".join(runtime.shell_join(a) for a in steps),
            ),
            *super().dry_run(workers),
        ]

    def write_config(self) -> str:
        """The kind config of a cluster this `up` creates: the repo's, with the node's
        local-path volumes (the results claim's among them) in a folder on this machine."""
        import yaml

        volumes = Path(self.options.volumes_dir)
        try:
            volumes.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"cannot create {volumes} for the kind cluster's volumes: {e.strerror}",
                "run from a folder you can write",
            ) from None
        path = self.state.path / "kind-config.yaml"
        self.state.path.mkdir(parents=True, exist_ok=True)
        doc = manifests.kind_config(self.kind_cluster, str(volumes))
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return str(path)

    def _record(self) -> KindRecord:
        rec = super()._record()
        if _unfinished(rec):
            raise UserError(
                f"kind cluster {rec.get('kind_cluster')} is still being made by a `cluster up` "
                "(or one that was stopped while it made it)",
                f"wait for that up, or run {command('cluster down')} to clean up",
            )
        return rec

    def kept_results(self, rec: KindRecord) -> str | None:
        if _unfinished(rec):
            return None  # no RayCluster ever ran, so no results
        if not rec.get("created_kind"):
            return super().kept_results(rec)  # the kind cluster stays, and its claim
        claim = f"{rec.get('namespace')}_{rec.get('results_claim')}"
        return (
            f"results kept on this machine in {rec.get('volumes_dir')} (the folder ending "
            f"_{claim}; `cluster down --delete-results` deletes it)"
        )

    def _delete_results(self, rec: KindRecord) -> str:
        if not rec.get("created_kind"):
            return super()._delete_results(rec)
        import shutil

        suffix = f"_{rec.get('namespace')}_{rec.get('results_claim')}"
        gone = [
            d
            for d in Path(rec.get("volumes_dir") or "/nonexistent").glob(f"*{suffix}")
            if d.is_dir()
        ]
        for d in gone:
            try:
                shutil.rmtree(d)
            except OSError as e:
                raise UserError(
                    f"cannot delete the results folder {d}: {e.strerror}",
                    f"delete it yourself (the kind node wrote it as root: sudo rm -rf {d})",
                ) from None
        return (
            f"results deleted: {', '.join(map(str, gone))}" if gone else "no results folder found"
        )

    def _delete_kind(self, name: str, log: Path) -> None:
        procs.run_logged([tool("kind") or "kind", "delete", "cluster", "--name", name], log)

    def is_running(self) -> bool:
        rec = self.state.read()
        if rec and rec.get("provider") == self.name and _unfinished(rec):
            return False
        if rec and rec.get("provider") == self.name and tool("kind"):
            try:
                if rec.get("kind_cluster", self.kind_cluster) not in self.existing_clusters():
                    return False  # `kind delete cluster` by hand: the record is stale
            except UserError:
                pass
        return super().is_running()

    def redis_cleanup_wait_s(self, rec: KindRecord) -> float:
        # A kind cluster this `up` made goes whole, its Redis with it.
        return 0.0 if rec.get("created_kind") else super().redis_cleanup_wait_s(rec)

    def _teardown(self, rec: KindRecord) -> None:
        name = rec.get("kind_cluster") or self.kind_cluster
        shutil.rmtree(self.state.path / "chart", ignore_errors=True)  # a killed `up`'s download
        (self.state.path / "image.tar").unlink(missing_ok=True)
        if tool("kind") and name not in self.existing_clusters():
            self._stop_forward(rec)  # `kind delete cluster` by hand: nothing left in it
            return
        super()._teardown(rec)
        if not rec.get("created_kind"):
            return
        try:
            others = self._other_rayclusters(rec)
        except UserError:
            if not _unfinished(rec):
                raise
            # An `up` stopped while it made this kind cluster: its API never answered anyone.
            others = []
        if others:
            say(
                f"kind cluster {name} kept: RayClusters {', '.join(others)} of other state "
                f"dirs run on it (`kind delete cluster --name {name}` once they are down)"
            )
            return
        self._delete_kind(name, self.state.logs_dir / "kind-down.log")

    def _other_rayclusters(self, rec: KindRecord) -> list[str]:
        """namespace/name of the RayClusters on the kind cluster other than this one's."""
        from rayscale.providers.kube_api import GROUP, PLURAL, VERSION

        try:
            items = self._apis(rec)[0].list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        except Exception as e:
            raise UserError(
                f"cannot list the RayClusters on kind cluster {rec.get('kind_cluster')}: "
                f"{getattr(e, 'reason', None) or type(e).__name__}",
                "is it up? (`kubectl cluster-info`)",
            ) from None
        mine = (rec.get("namespace"), rec.get("name"))
        return [
            f"{m['namespace']}/{m['name']}"
            for m in (i["metadata"] for i in items)
            if (m["namespace"], m["name"]) != mine and not m.get("deletionTimestamp")
        ]


def _unfinished(rec: KindRecord) -> bool:
    """The record `up` writes before `kind create cluster`: no RayCluster named yet (the
    up is still running, or was killed while it made the kind cluster)."""
    return "name" not in rec


def _gib(quantity: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "G": 1e9 / GIB, "M": 1e6 / GIB}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / GIB
