"""How a command reaches a cluster: the dashboard / Job API URL and the cluster's token,
and where the nodes already hold the job (so it is not uploaded). Providers hand one out;
jobs.py takes one. Neither imports the other."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rayscale.errors import UserError

# Where the kit's image holds the job, and the digest of that copy (docker/Dockerfile).
IMAGE_JOB = "/opt/rayscale/job"
IMAGE_JOB_DIGEST = "/opt/rayscale/job.sha256"


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str | None
    # The cluster's nodes read this machine's files (the local provider): the job is
    # submitted as a path, not uploaded as a working_dir.
    shares_disk: bool = False
    # Where the nodes' image holds the job and the digest of that copy (job_files.job_digest):
    # a job dir with the same digest runs from there, not uploaded.
    image_job: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never put the token in logs
        return f"Endpoint(url={self.url!r}, token={'set' if self.token else None})"


def api_timeout() -> float:
    """Seconds a call to a cluster's API (the Job API, Kubernetes') may wait for an answer
    before the connection counts as lost: a half-open connection never answers
    [env RAYSCALE_API_TIMEOUT, default 60]."""
    raw = os.environ.get("RAYSCALE_API_TIMEOUT") or "60"
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise UserError(
            f"RAYSCALE_API_TIMEOUT={raw!r} is not a number of seconds",
            "e.g. RAYSCALE_API_TIMEOUT=60",
        )
    return value
