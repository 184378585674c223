"""The kuberay provider's results storage: the PersistentVolumeClaim every pod mounts for
Tune's output, checked before anything else is created (pods on separate nodes must share
it: ReadWriteMany, never a block-storage class), proved writable by the pods' user once
the cluster is up, and kept or deleted at `down`."""

from __future__ import annotations

import contextlib
from typing import Any

from rayscale import manifests
from rayscale.errors import UserError
from rayscale.providers.kube_api import api_error, missing_namespace, no_namespace

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


class ResultsClaim:
    """The results claim's part of KubeRayProvider (its `_apis`, `_api`, `_profile`,
    `options` and `endpoint` are the provider's)."""

    _apis: Any
    _api: Any
    _profile: Any
    options: Any
    endpoint: Any

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
                raise api_error(
                    e,
                    f"cannot read PersistentVolumeClaim {name}",
                    "your role needs `get` on persistentvolumeclaims in this namespace",
                ) from None
            if missing_namespace(e):
                raise no_namespace(ns) from None
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
            if missing_namespace(e):
                raise no_namespace(ns) from None
            raise api_error(
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

    def _undo_plan(self, rec: dict[str, Any]) -> None:
        if rec.get("made_claim"):  # an empty claim this failed `up` made: nothing is lost with it
            with contextlib.suppress(Exception):
                self._delete_claim(rec)

    def _delete_claim(self, rec: dict[str, Any]) -> None:
        """Delete the results claim this `up` made; one already gone is fine."""
        claim = rec["results_claim"]
        try:
            self._apis(rec)[1].delete_namespaced_persistent_volume_claim(claim, rec["namespace"])
        except Exception as e:
            if getattr(e, "status", None) != 404:
                raise api_error(
                    e,
                    f"cannot delete PersistentVolumeClaim {claim}",
                    f"kubectl -n {rec['namespace']} delete pvc {claim}",
                ) from None

    def _on_up(self, rec: dict[str, Any]) -> None:
        self._check_results_writable(rec)

    def _check_results_writable(self, rec: dict[str, Any]) -> None:
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

    def _claim_class(self, rec: dict[str, Any]) -> str | None:
        try:
            claim = self._apis(rec)[1].read_namespaced_persistent_volume_claim(
                rec["results_claim"], rec["namespace"]
            )
            return claim.spec.storage_class_name
        except Exception:
            return None

    def kept_results(self, rec: dict[str, Any]) -> str | None:
        if not rec.get("owned") or not rec.get("results_claim"):
            return None
        return (
            f"results kept in PersistentVolumeClaim {rec['results_claim']} in namespace "
            f"{rec['namespace']} (`cluster down --delete-results` deletes it)"
        )

    def _delete_results(self, rec: dict[str, Any]) -> str:
        claim = rec.get("results_claim")
        if not rec.get("owned") or not claim:
            return "no results claim of this cluster's; nothing deleted"
        if not rec.get("made_claim"):
            return f"PersistentVolumeClaim {claim} is yours (--results-claim): kept"
        self._delete_claim(rec)
        return f"results deleted: PersistentVolumeClaim {claim} in namespace {rec['namespace']}"
