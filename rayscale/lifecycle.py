"""`up`, once for every provider: make machines -> start Ray -> wait for the nodes -> probe
the Job API (Provider.up), then read once what only a job can tell (the image's job
digest where rayscale cannot exec into the head). The CLI and the scaling study call this;
providers know nothing of jobs."""

from __future__ import annotations

from rayscale import jobs, providers
from rayscale.errors import UserError
from rayscale.providers.base import Provider
from rayscale.state import StateDir


def up(provider: Provider, workers: int, timeout: float | None = None) -> None:
    """Bring the cluster up under the state dir's lock; see Provider.up for the contract."""
    with provider.state.lock():
        provider.up(workers, timeout)
        if provider.image_probe:
            rec = provider.state.read()
            rec["image_job_digest"] = jobs.image_job_digest(provider.endpoint())
            provider.state.write(rec)


def listing(state: StateDir) -> list[dict]:
    """Every cluster recorded under the state dir's root: name, provider, recorded workers
    (local, docker), whether it still runs (without reaching its Job API), dashboard."""
    rows = []
    for s in state.siblings():
        rec = s.read() or {}
        try:
            running = "running" if providers.recorded(s).is_running() else "gone"
        except UserError as e:  # e.g. a kubeconfig context that no longer exists
            running = f"unknown: {e.problem}"
        rows.append(
            {
                "name": s.name,
                "provider": rec.get("provider"),
                "workers": len(rec["workers"]) if isinstance(rec.get("workers"), list) else None,
                "state": running,
                "dashboard": rec.get("dashboard_url"),
                "state_dir": str(s.path),
            }
        )
    return rows
