"""Providers by name. The caller never needs to know which one it holds.

Adding a provider: one module with a `Provider` subclass (its `Options` dataclass names
the `cluster up` / `scaling` options it takes), one line in REGISTRY, and the conformance
suite (tests/test_provider_conformance.py) passing for it.
"""

from __future__ import annotations

import importlib

from rayscale.errors import UserError
from rayscale.providers.base import NodeShape, Provider
from rayscale.state import StateDir, command

# name -> "module:Class"
REGISTRY: dict[str, str] = {
    "local": "rayscale.providers.local:LocalProvider",
    "docker": "rayscale.providers.docker:DockerProvider",
    "ray-up": "rayscale.providers.ray_up:RayUpProvider",
    "kuberay": "rayscale.providers.kuberay:KubeRayProvider",
    "kind": "rayscale.providers.kind:KindProvider",
}
NAMES = tuple(REGISTRY)


def provider_class(name: str) -> type[Provider]:
    if name not in REGISTRY:
        raise UserError(f"unknown provider {name!r}", f"choose one of: {', '.join(NAMES)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def get(name: str, state: StateDir, **options) -> Provider:
    """The provider NAME, given only options it takes: one given to a provider that ignores
    it (None = not given) is refused, not silently dropped."""
    cls = provider_class(name)
    given = {k: v for k, v in options.items() if v is not None}
    for option in given:
        if option not in cls.option_names():
            users = [n for n in NAMES if option in provider_class(n).option_names()]
            raise UserError(
                f"{_flag(option)} does not apply to the {name} provider",
                f"drop it (it is for {', '.join(users) or 'no provider'})",
            )
    shape = None
    if cls.takes_shape:
        shape = NodeShape.sized(
            given.pop("cpus_per_worker", NodeShape.cpus_per_worker),
            given.pop("memory_per_worker", NodeShape.memory_per_worker_gib),
        )
    return cls(state, shape, **given)


def recorded(state: StateDir, address_too: bool = False) -> Provider:
    """The provider of the cluster recorded in the state dir (`address_too`: the command
    also takes --address, so the fix may name it)."""
    rec = state.read()
    if not rec:
        raise UserError(
            f"no cluster is recorded in {state.path}",
            f"start one with {command('cluster up')}"
            + (", or pass --address" if address_too else "")
            + "; `rayscale cluster list` shows those recorded",
        )
    keep = {k: rec[k] for k in ("context", "namespace") if rec.get(k)}
    return get(rec["provider"], state, **keep)
