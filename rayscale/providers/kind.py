"""The kind provider: a Kubernetes cluster in Docker on this machine, then KubeRay on it.

up = create the kind cluster if it is missing (k8s/kind-config.yaml), install the KubeRay
CRDs server-side and the operator from its Helm chart (1.7.0, k8s/operator-values.yaml),
build the kit's image if Docker lacks it and `kind load` it, then hand over to the
kuberay provider (context kind-<name>, the "kind" manifest profile). down deletes the
RayCluster, and the kind cluster too if this `up` created it.

It never falls back to another provider: when a tool is missing it says which, how to
install it, and that `make cluster-up PROVIDER=local` needs none of them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from rayscale import manifests, procs
from rayscale.errors import UserError
from rayscale.procs import tool
from rayscale.providers.docker import engine_memory_gib
from rayscale.providers.kuberay import KubeRayProvider

ROOT = Path(__file__).resolve().parent.parent.parent
KIND_CLUSTER = "rayscale"
CRDS = f"github.com/ray-project/kuberay/ray-operator/config/crd?ref=v{manifests.KUBERAY_VERSION}"
HELM_REPO = "https://ray-project.github.io/kuberay-helm/"
INSTALL = {
    "docker": "https://docs.docker.com/engine/install/ (Debian: apt-get install docker.io)",
    "kind": "go install sigs.k8s.io/kind@v0.29.0, or https://kind.sigs.k8s.io/docs/user/quick-start/",
    "kubectl": "https://kubernetes.io/docs/tasks/tools/",
    "helm": "https://helm.sh/docs/intro/install/",
}
GIB = 1024**3
# Beyond the Ray pods: the control plane, the operator and the autoscaler sidecar.
KIND_OVERHEAD_GIB = 1.5


def missing_tools() -> list[str]:
    return [t for t in INSTALL if not tool(t)]


class KindProvider(KubeRayProvider):
    name = "kind"
    profile_name = "kind"

    def __init__(self, state, shape=None, api=None, **options: Any):
        # The CLI passes None for options not given.
        options["context"] = options.get("context") or f"kind-{options.get('kind_cluster') or KIND_CLUSTER}"
        options["namespace"] = options.get("namespace") or "default"
        super().__init__(state, shape, api, **options)

    @property
    def kind_cluster(self) -> str:
        return self.options.get("kind_cluster") or KIND_CLUSTER

    @property
    def image(self) -> str:
        return self.options.get("image") or manifests.PROFILES["kind"].image

    def preflight(self) -> None:
        gone = missing_tools()
        if gone:
            how = "; ".join(f"{t}: {INSTALL[t]}" for t in gone)
            raise UserError(f"the kind provider needs {', '.join(gone)}, not found on PATH ({how})",
                            "or run without Kubernetes: make cluster-up PROVIDER=local")

    def check_fits(self, workers: int) -> None:
        p = manifests.PROFILES["kind"]
        need = KIND_OVERHEAD_GIB + _gib(p.head_memory) + workers * _gib(p.worker_memory)
        have = engine_memory_gib()
        if have and need > have:
            raise UserError(
                f"{workers} workers need about {need:.1f} GiB but Docker has {have:.1f} GiB",
                "give Docker more memory (Docker Desktop: Settings > Resources) or use fewer --workers")

    # ---- the commands up runs, in order (read by tests and by scripts/e2e-kind.sh) ------

    def commands(self, create: bool, build: bool) -> list[list[str]]:
        kind, kubectl, helm = tool("kind") or "kind", tool("kubectl") or "kubectl", tool("helm") or "helm"
        ctx = ["--context", self.options["context"]]
        cmds = []
        if create:
            cmds.append([kind, "create", "cluster", "--name", self.kind_cluster,
                         "--config", str(ROOT / "k8s" / "kind-config.yaml"), "--wait", "120s"])
        cmds += [
            # The CRDs are too large for client-side apply (annotation limit): server-side.
            [kubectl, *ctx, "apply", "--server-side", "--force-conflicts", "-k", CRDS],
            [helm, "repo", "add", "--force-update", "kuberay", HELM_REPO],
            [helm, "--kube-context", self.options["context"], "upgrade", "--install", "kuberay-operator",
             "kuberay/kuberay-operator", "--version", manifests.KUBERAY_VERSION, "--skip-crds",
             "--values", str(ROOT / "k8s" / "operator-values.yaml"), "--wait", "--timeout", "5m"],
        ]
        if build:
            cmds.append(["make", "-C", str(ROOT), "image", f"IMAGE={self.image}"])
        cmds.append([kind, "load", "docker-image", self.image, "--name", self.kind_cluster])
        return cmds

    def up(self, workers: int, timeout: float | None = None) -> None:
        self.preflight()
        self._claim_state()
        self.check_fits(workers)
        clusters = subprocess.run([tool("kind"), "get", "clusters"], capture_output=True, text=True,
                                  timeout=60).stdout.split()
        create = self.kind_cluster not in clusters
        build = not subprocess.run([tool("docker"), "images", "-q", self.image], capture_output=True,
                                   text=True, timeout=60).stdout.strip()
        log = self.state.path / "logs" / "kind-up.log"
        try:
            for argv in self.commands(create, build):
                procs.run_logged(argv, log, timeout=900)
            super().up(workers, timeout)
        except BaseException:
            if create:
                procs.run_logged([tool("kind"), "delete", "cluster", "--name", self.kind_cluster], log, check=False)
            raise
        rec = self._record()
        rec.update(kind_cluster=self.kind_cluster, created_kind=create)
        self.state.write(rec)

    def _teardown(self, rec: dict[str, Any]) -> None:
        try:
            super()._teardown(rec)
        finally:
            if rec.get("created_kind"):
                procs.run_logged([tool("kind") or "kind", "delete", "cluster", "--name", rec["kind_cluster"]],
                                 self.state.path / "logs" / "kind-down.log", check=False)


def _gib(quantity: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "G": 1e9 / GIB, "M": 1e6 / GIB}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / GIB
