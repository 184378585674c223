"""The bundled job as a RayJob on a running RayCluster (`job submit --rayjob`).

KubeRay's own path to a job: the operator makes a submitter (a Kubernetes Job whose pod
runs `ray job submit` inside the cluster, in the head's image, this kit's), so nothing is
port-forwarded. The RayJob names the running cluster with `clusterSelector`; KubeRay
refuses `backoffLimit` there (validation.go: "BackoffLimit is incompatible with
ClusterSelector mode"), so retries are the submitter's: `submitterConfig.backoffLimit`.
The record is the job's own `RAYSCALE_RESULT` line, read from the submitter's log, which
follows the Ray job's (`ray job logs --follow`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rayscale import jobs, manifests
from rayscale.errors import UserError

PLURAL = "rayjobs"
SUBMITTER_RETRIES = 2
MAX_NAME = 47  # KubeRay's MaxRayJobNameLength
ENDED = ("Complete", "Failed")


# How long the API server may be out of reach while a RayJob is followed (a port-forward,
# a control plane restarting) before the command gives up following; the job runs on.
LOST_GRACE_S = 60.0


class Lost(UserError):
    """The API server went out of reach while a RayJob was followed."""


def body(name: str, profile, namespace: str, cluster: str, job_args: list[str]) -> dict:
    doc = manifests.rayjob(name, profile, namespace=namespace, cluster=cluster, job_args=job_args)
    doc["metadata"]["labels"] = {"app.kubernetes.io/created-by": "rayscale"}
    doc["spec"]["submitterConfig"] = {"backoffLimit": SUBMITTER_RETRIES}
    return doc


def job_name(cluster: str) -> str:
    suffix = f"-job-{int(time.time())}"
    return cluster[: MAX_NAME - len(suffix)].rstrip("-") + suffix


class RayJobRun:
    """One RayJob: create it, follow its status and its submitter's log, read its record."""

    def __init__(self, custom, core, namespace: str, name: str):
        self.custom, self.core, self.ns, self.name = custom, core, namespace, name

    def create(self, doc: dict) -> None:
        try:
            self.custom.create_namespaced_custom_object("ray.io", "v1", self.ns, PLURAL, doc)
        except Exception as e:
            status = getattr(e, "status", None)
            raise UserError(
                f"the API server refused RayJob {self.name}: {status or type(e).__name__}",
                "is the operator KubeRay 1.7.0 with the RayJob CRD? your role needs `create` "
                "on rayjobs.ray.io",
            ) from None

    def status(self) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object("ray.io", "v1", self.ns, PLURAL, self.name)
        return obj.get("status") or {}

    def log(self) -> str:
        """The submitter's log so far (its latest pod: a retried one starts afresh)."""
        pods = self.core.list_namespaced_pod(self.ns, label_selector=f"job-name={self.name}")
        items = sorted(pods.items, key=lambda p: p.metadata.creation_timestamp)
        if not items:
            return ""
        try:
            return self.core.read_namespaced_pod_log(
                items[-1].metadata.name, self.ns, container="ray-job-submitter"
            )
        except Exception:
            return ""  # not started yet

    def follow(self, timeout: float | None, on_line: Callable[[str], None]) -> tuple[str, str]:
        """(the Ray job's status, the submitter's whole log) once the RayJob has ended."""
        deadline = time.monotonic() + timeout if timeout else None
        seen, lost_since = 0, None
        while True:
            try:
                st = self.status()
                text = self.log()
                lost_since = None
            except Exception as e:  # the API server out of reach: the job runs on there
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > LOST_GRACE_S:
                    raise Lost(
                        f"lost the API server while following RayJob {self.name} "
                        f"({getattr(e, 'reason', None) or type(e).__name__}); it runs on",
                        f"follow it: kubectl -n {self.ns} get rayjob {self.name} -w",
                    ) from None
                time.sleep(2.0)
                continue
            lines = text.splitlines()
            for line in lines[seen:] if len(lines) >= seen else lines:
                on_line(line)
            seen = len(lines)
            if st.get("jobDeploymentStatus") in ENDED:
                return st.get("jobStatus") or "FAILED", self.log() or text
            if deadline and time.monotonic() > deadline:
                raise UserError(
                    f"RayJob {self.name} did not end in {timeout:.0f} s "
                    f"(it is {st.get('jobDeploymentStatus', 'not started')})",
                    f"follow it: kubectl -n {self.ns} get rayjob {self.name} -w; or raise --timeout",
                )
            time.sleep(2.0)

    def delete(self) -> None:
        try:
            self.custom.delete_namespaced_custom_object("ray.io", "v1", self.ns, PLURAL, self.name)
        except Exception:
            pass


def run(custom, core, namespace: str, cluster: str, profile, job_args: list[str],
        timeout: float | None, on_line: Callable[[str], None]) -> dict:  # fmt: skip
    """Submit the bundled job as a RayJob on `cluster` and follow it to its record."""
    name = job_name(cluster)
    r = RayJobRun(custom, core, namespace, name)
    r.create(body(name, profile, namespace, cluster, job_args))
    on_line(f"rayscale: RayJob {name} created; following its submitter's log")
    try:
        status, log = r.follow(timeout, on_line)
    except Lost:
        raise  # only the connection is gone: the job goes on
    except BaseException:
        r.delete()  # interrupted or timed out: the RayJob does not outlive the command
        raise
    rec = jobs.parse_result(name, log, status)
    rec["rayjob"] = name
    return rec


def _cluster_of(provider) -> dict:
    """The recorded RayCluster a RayJob runs on: kuberay and kind only."""
    from rayscale.providers.kuberay import KubeRayProvider

    if not isinstance(provider, KubeRayProvider):
        raise UserError(
            f"--rayjob needs a cluster of the kuberay or kind provider (this one is "
            f"{provider.name})",
            "drop --rayjob: the job goes through the Job API",
        )
    return provider._record()


def preview(provider, job_args: list[str]) -> str:
    """`job submit --rayjob --dry-run`: the RayJob it would create, as YAML; nothing is
    asked of the API server."""
    rec = _cluster_of(provider)
    doc = body(job_name(rec["name"]), provider._profile, rec["namespace"], rec["name"], job_args)
    return manifests.to_yaml(doc)


def submit_on(provider, job_args: list[str], timeout: float | None,
              on_line: Callable[[str], None]) -> dict:  # fmt: skip
    """`job submit --rayjob` on the recorded cluster: kuberay and kind only."""
    rec = _cluster_of(provider)
    custom, core = provider._apis(rec)
    return run(
        custom, core, rec["namespace"], rec["name"], provider._profile, job_args, timeout, on_line
    )
