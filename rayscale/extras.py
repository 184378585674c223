"""The optional parts of the kit (pyproject.toml's extras), and the one line that names a
missing one: a user who only submits to someone else's cluster installs no XGBoost,
kubernetes client or matplotlib, and meets this line, not an ImportError, if they need one."""

from __future__ import annotations

import importlib.util

from rayscale.errors import UserError


def need(extra: str, what: str, *modules: str) -> None:
    """Refuse WHAT unless every module of EXTRA can be imported (found, not imported: cheap)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"{what} needs {', '.join(missing)}, which is not installed",
            f"pip install 'rayscale[{extra}]' (`make install` installs every extra)",
        )


def need_job(what: str) -> None:
    """The search job runs on this machine's Python (local provider, Ray's fake cluster)."""
    need("job", what, "xgboost", "sklearn", "pandas", "pyarrow", "optuna", "ray.tune")


def need_study(what: str) -> None:
    need("study", what, "numpy", "scipy", "matplotlib")


def need_k8s(what: str) -> None:
    need("k8s", what, "kubernetes")
