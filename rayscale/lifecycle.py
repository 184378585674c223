"""`up`, once for every provider: make machines -> start Ray -> wait for the nodes -> probe
the Job API (Provider.up), then read once what only a job can tell (the image's job
digest where rayscale cannot exec into the head). The CLI and the scaling study call this;
providers know nothing of jobs."""

from __future__ import annotations

from rayscale import jobs
from rayscale.providers.base import Provider


def up(provider: Provider, workers: int, timeout: float | None = None) -> None:
    """Bring the cluster up under the state dir's lock; see Provider.up for the contract."""
    with provider.state.lock():
        provider.up(workers, timeout)
        if provider.image_probe:
            rec = provider.state.read()
            rec["image_job_digest"] = jobs.image_job_digest(provider.endpoint())
            provider.state.write(rec)
