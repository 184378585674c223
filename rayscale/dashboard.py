"""Node readiness read through the dashboard's HTTP API, for clusters reached by a forward.

Local and docker clusters publish their GCS on this machine and are polled there (gcs.py).
A cluster on cloud VMs or in Kubernetes is reached through one forwarded port, the
dashboard's, so its nodes are read from the dashboard's node summary instead: the same
ALIVE / DEAD states the GCS holds, with the token in the Authorization header.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from rayscale.gcs import GcsNode


def nodes(url: str, token: str | None, timeout: float = 5.0) -> list[GcsNode]:
    """The nodes the cluster's GCS knows, as the dashboard reports them.

    Raises OSError (URLError, ConnectionError, timeout) while the dashboard cannot be reached.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url.rstrip("/") + "/nodes?view=summary", headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = json.load(r)
    out = []
    for entry in body.get("data", {}).get("summary", []):
        raylet = entry.get("raylet", {})
        res = raylet.get("resourcesTotal", {})
        out.append(
            GcsNode(
                node_id=raylet.get("nodeId", ""),
                alive=raylet.get("state") == "ALIVE",
                is_head=bool(raylet.get("isHeadNode")),
                node_manager_port=int(raylet.get("nodeManagerPort", 0)),
                address=raylet.get("nodeManagerAddress", entry.get("ip", "")),
                cpus=float(res.get("CPU", 0.0)),
                memory_bytes=float(res.get("memory", 0.0)),
            )
        )
    return out


def alive_workers(url: str, token: str | None) -> int | None:
    """How many worker nodes are alive, or None while the dashboard does not answer."""
    try:
        return sum(1 for n in nodes(url, token) if n.alive and not n.is_head)
    except (OSError, urllib.error.URLError, ValueError):
        return None
