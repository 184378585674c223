"""The search space: read from YAML, checked, and drawn into a fixed list of configs."""

from __future__ import annotations

import math

import numpy as np
import yaml
from data import InputError

# Parameters the trainer understands; anything else in the file is a typo.
KNOWN = {
    "learning_rate",
    "max_depth",
    "num_boost_round",
    "subsample",
    "colsample_bytree",
    "colsample_bylevel",
    "min_child_weight",
    "gamma",
    "reg_alpha",
    "reg_lambda",
    "max_bin",
}
INTEGER = {"max_depth", "num_boost_round", "max_bin"}
KINDS = ("loguniform", "uniform", "randint", "choice")


def load(path: str) -> dict:
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise InputError(
            f"search space file {path!r} not found; pass an existing --search-space YAML"
        ) from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise InputError(
            f"search space file {path!r} is not valid YAML{at}; fix its syntax"
        ) from None
    if not isinstance(raw, dict) or not raw:
        raise InputError(
            f"search space file {path!r} must be a mapping of parameter: {{kind: bounds}}"
        )
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise InputError(
            f"search space names unknown parameter(s) {', '.join(map(str, unknown))}; known are: {', '.join(sorted(KNOWN))}"
        )
    space = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise InputError(
                f"search space parameter {name!r} must be one of {{{'|'.join(KINDS)}: bounds}}, got {spec!r}"
            )
        kind, bounds = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(bounds, list) or not bounds:
                raise InputError(f"search space parameter {name!r}: choice needs a non-empty list")
        else:
            if (
                not isinstance(bounds, list)
                or len(bounds) != 2
                or not all(isinstance(b, (int, float)) for b in bounds)
            ):
                raise InputError(
                    f"search space parameter {name!r}: {kind} needs [low, high] numbers"
                )
            low, high = bounds
            if not low < high and not (kind == "randint" and low == high):
                raise InputError(
                    f"search space parameter {name!r} has an empty range [{low}, {high}]; low must be below high"
                )
            if kind == "loguniform" and low <= 0:
                raise InputError(f"search space parameter {name!r}: loguniform needs low > 0")
        space[name] = (kind, bounds)
    return space


def draw(space: dict, n: int, seed: int, max_rounds: int) -> list[dict]:
    """n configs, deterministic for (space, n, seed); num_boost_round capped at max_rounds."""
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(n):
        cfg = {}
        for name, (kind, b) in space.items():
            if kind == "loguniform":
                v = float(math.exp(rng.uniform(math.log(b[0]), math.log(b[1]))))
            elif kind == "uniform":
                v = float(rng.uniform(b[0], b[1]))
            elif kind == "randint":
                v = int(rng.integers(int(b[0]), int(b[1]) + 1))
            else:
                v = b[int(rng.integers(len(b)))]
            if name in INTEGER:
                v = int(round(v))
            cfg[name] = v
        cfg["num_boost_round"] = min(int(cfg.get("num_boost_round", max_rounds)), max_rounds)
        configs.append(cfg)
    return configs


def _bounds(name: str, kind: str, b, max_rounds: int):
    """Bounds with num_boost_round capped at max_rounds, as draw() caps it."""
    if name == "num_boost_round" and kind != "choice":
        return [min(b[0], max_rounds), min(b[1], max_rounds)]
    return b


def normalise(cfg: dict, max_rounds: int) -> dict:
    """Integers where XGBoost wants them, rounds capped: for configs an adaptive search made."""
    out = {k: int(round(v)) if k in INTEGER else v for k, v in cfg.items()}
    out["num_boost_round"] = min(int(out.get("num_boost_round", max_rounds)), max_rounds)
    return out


def tune_space(space: dict, max_rounds: int) -> dict:
    """The space as Ray Tune distributions, for a searcher that picks configs (OptunaSearch)."""
    from ray import tune

    out = {}
    for name, (kind, b) in space.items():
        b = _bounds(name, kind, b, max_rounds)
        if kind == "loguniform":
            out[name] = tune.loguniform(b[0], b[1])
        elif kind == "uniform":
            out[name] = tune.uniform(b[0], b[1])
        elif kind == "randint":
            out[name] = tune.randint(int(b[0]), int(b[1]) + 1)  # Tune's upper bound is exclusive
        else:
            out[name] = tune.choice(b)
    out.setdefault("num_boost_round", max_rounds)
    return out


def suggest(trial, space: dict, max_rounds: int) -> dict:
    """A config from plain Optuna's trial (the no-Ray baseline), from the same space."""
    cfg = {}
    for name, (kind, b) in space.items():
        b = _bounds(name, kind, b, max_rounds)
        if kind in ("loguniform", "uniform"):
            cfg[name] = trial.suggest_float(name, b[0], b[1], log=kind == "loguniform")
        elif kind == "randint":
            cfg[name] = trial.suggest_int(name, int(b[0]), int(b[1]))
        else:
            cfg[name] = trial.suggest_categorical(name, b)
    return normalise(cfg, max_rounds)


def cost(cfg: dict) -> float:
    """Relative training cost of a config: per round, work grows with the number of leaves
    (2^depth; measured here: depth 9 trees cost ~4x depth 6 per round) and with the sampled
    fraction of rows and columns."""
    return (
        float(cfg.get("num_boost_round", 100))
        * 2.0 ** float(cfg.get("max_depth", 6))
        * float(cfg.get("subsample", 1.0))
        * float(cfg.get("colsample_bytree", 1.0))
    )


def longest_first(configs: list, key=None) -> list:
    """Order configs by descending cost so parallel slots finish together (LPT scheduling):
    a long trial started last would leave every other worker idle while it runs.
    KEY: each item's config, where the items are not configs themselves."""
    return sorted(configs, key=lambda c: cost(key(c) if key else c), reverse=True)
