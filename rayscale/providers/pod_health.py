"""What a RayCluster's pods say while the kit waits for them, in the kubelet's words.

A kubelet retries what may pass (a slow registry, a Secret the operator has not written
yet) and KubeRay replaces a pod whose Ray container exited (raycluster_controller.go:
shouldDeletePod), so one look at a pod rarely shows a lasting fault. PodWatch remembers
across looks: a problem is final when its words say so (the registry has no such image),
when it outlasts `stuck_s`, or when the operator had to replace the same node again and
again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Waiting reasons no amount of waiting fixes.
FINAL = {"InvalidImageName", "ErrImageNeverPull"}
# The kubelet retries these; final when their cause says so, or when they last.
PULL = {"ErrImagePull", "ImagePullBackOff"}
RETRIED = {"CreateContainerConfigError", "CreateContainerError", *PULL}
# A registry's answers that another pull will not change (containerd's and CRI-O's words).
FINAL_PULL = (
    "not found",
    "manifest unknown",
    "pull access denied",
    "repository does not exist",
    "unauthorized",
    "insufficient_scope",
    "invalid reference format",
)
STUCK_S = 180.0  # a retried problem that lasts this long is reported as it stands
HEAD_DEATHS = 2  # heads the operator replaced before `up` stops waiting
WORKER_DEATHS = 3  # worker pods of one wait, likewise


def ready(pod) -> bool:
    conds = (pod.status.conditions if pod.status else None) or []
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in conds
    )


def terminating(pod) -> bool:
    return pod.metadata.deletion_timestamp is not None


def container_problem(pod) -> tuple[str, str] | None:
    """(reason, words) for the first container (init containers first) not running well."""
    st = pod.status
    if st is None:
        return None
    for kind, statuses in (
        ("init container", st.init_container_statuses),
        ("container", st.container_statuses),
    ):
        for cs in statuses or []:
            s = cs.state
            if (
                s
                and s.waiting
                and s.waiting.reason
                and s.waiting.reason not in ("ContainerCreating", "PodInitializing")
            ):
                return (
                    s.waiting.reason,
                    f"{kind} {cs.name}: {s.waiting.reason}: {s.waiting.message or ''}".strip(": "),
                )
            if s and s.terminated and s.terminated.exit_code:
                reason = s.terminated.reason or "Error"
                return reason, f"{kind} {cs.name} exited {s.terminated.exit_code} ({reason})"
            if kind == "init container" and s and s.running:
                return "Initializing", (
                    f"init container {cs.name} still running"
                    + (
                        " (the worker waits for the head's GCS)"
                        if cs.name == "wait-gcs-ready"
                        else ""
                    )
                )
    return None


def ray_exit(pod) -> str | None:
    """How the pod's Ray container (its first) ended, or None while it has not."""
    spec = pod.spec.containers if pod.spec else None
    if not spec or not pod.status:
        return None
    for cs in pod.status.container_statuses or []:
        t = cs.state.terminated if cs.state else None
        if cs.name == spec[0].name and t is not None:
            return f"exited {t.exit_code} ({t.reason or 'Error'})"
    return None


def pending_reason(pod) -> str:
    """Why a pod is not running, in the scheduler's or kubelet's words."""
    problem = container_problem(pod)
    if problem:
        return problem[1]
    st = pod.status
    for c in (st.conditions or []) if st else []:
        if c.status == "False" and c.message:
            return f"{c.reason}: {c.message}"
    return st.phase if st else "unknown"


class PodWatch:
    def __init__(
        self,
        tail: Callable[[object], str],
        stuck_s: float = STUCK_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        """tail(pod): the last lines of the pod's Ray container ('' when none can be read)."""
        self.tail, self.stuck_s, self.clock = tail, stuck_s, clock
        self.since: dict[tuple[str, str], float] = {}
        self.pull_said: dict[str, str] = {}  # pod -> its last ErrImagePull words
        self.deaths: dict[str, tuple[str, str]] = {}  # pod -> (how its Ray container ended, log)

    def verdict(self, pod) -> str | None:
        """Words for a pod that will not start however long we wait; None while it may."""
        problem = container_problem(pod)
        if not problem:
            return None
        reason, words = problem
        name = pod.metadata.name
        if reason in FINAL:
            return words
        if reason == "ErrImagePull":
            self.pull_said[name] = words
        if reason in PULL:
            said = self.pull_said.get(name, words)
            if any(s in said.lower() for s in FINAL_PULL):
                return said
        if reason in RETRIED:
            key = (name, "pull" if reason in PULL else reason)
            since = self.since.setdefault(key, self.clock())
            if self.clock() - since >= self.stuck_s:
                return f"{self.pull_said.get(name, words)}, for {self.clock() - since:.0f} s"
        return None

    def look(self, pods: list) -> None:
        """Note each pod whose Ray container ended (the operator replaces it), once."""
        for p in pods:
            how = ray_exit(p)
            if how and p.metadata.name not in self.deaths:
                self.deaths[p.metadata.name] = (how, self.tail(p))

    def crash_loop(self, limit: int) -> str | None:
        """Words for pods that died `limit` times or more: how the last one ended, its log."""
        if len(self.deaths) < limit:
            return None
        how, log = list(self.deaths.values())[-1]
        lines = " | ".join(x.strip() for x in log.strip().splitlines()[-3:] if x.strip())
        return (
            f"its Ray container {how} in {len(self.deaths)} pods in a row (the operator "
            f"replaces each)" + (f"; its last log lines: {lines[:400]}" if lines else "")
        )
