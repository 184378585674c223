"""Providers by name. The caller never needs to know which one it holds.

Adding a provider: one module with a `Provider` subclass (its `Options` dataclass declares
the `cluster up` / `scaling` flags it takes, with `flag()`; the CLI builds them from there),
one line in REGISTRY, its page in docs/providers.md, and the conformance suite
(tests/test_provider_conformance.py) passing for it.
"""

from __future__ import annotations

import dataclasses
import importlib

from rayscale.errors import UserError
from rayscale.providers.base import Flag, NodeShape, Provider
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


def flags() -> list[tuple[str, Flag]]:
    """Every provider's flags, one per name, in registry order. Each help begins with the
    providers that take the flag ("docker, kuberay, kind: the kit's image ...")."""
    helps: dict[str, dict[str, list[str]]] = {}  # option -> help -> providers
    first: dict[str, Flag] = {}
    for name in NAMES:
        for option, f in provider_class(name).flags().items():
            seen = first.setdefault(option, f)
            if (f.choices, f.envvar, f.metavar) != (seen.choices, seen.envvar, seen.metavar):
                raise TypeError(f"providers declare {_flag(option)} differently")
            helps.setdefault(option, {}).setdefault(f.help, []).append(name)
    return [
        (
            option,
            dataclasses.replace(
                first[option], help="; ".join(f"{', '.join(ns)}: {h}" for h, ns in by.items())
            ),
        )
        for option, by in helps.items()
    ]


def shaped() -> list[str]:
    """The providers that size their workers by --cpus-per-worker / --memory-per-worker."""
    return [name for name in NAMES if provider_class(name).takes_shape]


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
