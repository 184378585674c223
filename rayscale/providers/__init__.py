"""Providers by name. The caller never needs to know which one it holds."""

from __future__ import annotations

from rayscale.errors import UserError
from rayscale.providers.base import NodeShape, Provider
from rayscale.state import StateDir

NAMES = ("local", "docker", "ray-up", "kuberay", "kind")


def get(name: str, state: StateDir, shape: NodeShape | None = None, **options) -> Provider:
    if name == "local":
        from rayscale.providers.local import LocalProvider

        return LocalProvider(state, shape, **options)
    if name == "docker":
        from rayscale.providers.docker import DockerProvider

        return DockerProvider(state, shape, **options)
    if name == "ray-up":
        from rayscale.providers.ray_up import RayUpProvider

        return RayUpProvider(state, shape, **options)
    if name == "kuberay":
        from rayscale.providers.kuberay import KubeRayProvider

        return KubeRayProvider(state, shape, **options)
    if name == "kind":
        from rayscale.providers.kind import KindProvider

        return KindProvider(state, shape, **options)
    raise UserError(
        f"unknown provider {name!r}",
        f"choose one of: {', '.join(NAMES)}",
    )


def recorded(state: StateDir) -> Provider:
    """The provider of the cluster recorded in the state dir."""
    rec = state.read()
    if not rec:
        raise UserError(
            f"no cluster is recorded in {state.path}",
            "start one with `rayscale cluster up`, or pass --state-dir / --address",
        )
    keep = {k: rec[k] for k in ("context", "namespace") if rec.get(k)}
    return get(rec["provider"], state, **keep)
