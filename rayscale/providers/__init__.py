"""Providers by name. The caller never needs to know which one it holds.

Adding a provider: one module with a `Provider` subclass, and one line in REGISTRY naming
it and the `cluster up` / `scaling` options it takes.
"""

from __future__ import annotations

import importlib

from rayscale.errors import UserError
from rayscale.providers.base import NodeShape, Provider
from rayscale.state import StateDir

SHAPE = ("cpus_per_worker", "memory_per_worker")
KUBE = ("image", "context", "namespace", "storage_class", "results_claim")
# name -> ("module:Class", the options it takes)
REGISTRY: dict[str, tuple[str, tuple[str, ...]]] = {
    "local": ("rayscale.providers.local:LocalProvider", ("dashboard", *SHAPE)),
    "docker": ("rayscale.providers.docker:DockerProvider", ("image", *SHAPE)),
    "ray-up": ("rayscale.providers.ray_up:RayUpProvider", ("config",)),
    "kuberay": ("rayscale.providers.kuberay:KubeRayProvider", KUBE),
    "kind": ("rayscale.providers.kind:KindProvider", KUBE),
}
NAMES = tuple(REGISTRY)


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def get(name: str, state: StateDir, **options) -> Provider:
    """The provider NAME, given only options it takes: one given to a provider that ignores
    it (None = not given) is refused, not silently dropped."""
    if name not in REGISTRY:
        raise UserError(f"unknown provider {name!r}", f"choose one of: {', '.join(NAMES)}")
    target, takes = REGISTRY[name]
    given = {k: v for k, v in options.items() if v is not None}
    for option in given:
        if option not in takes:
            users = [n for n, (_, t) in REGISTRY.items() if option in t]
            raise UserError(
                f"{_flag(option)} does not apply to the {name} provider",
                f"drop it (it is for {', '.join(users) or 'no provider'})",
            )
    shape = None
    if "cpus_per_worker" in takes:
        shape = NodeShape.sized(
            given.pop("cpus_per_worker", NodeShape.cpus_per_worker),
            given.pop("memory_per_worker", NodeShape.memory_per_worker_gib),
        )
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(state, shape, **given)


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
