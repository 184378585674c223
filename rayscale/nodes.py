"""A cluster's nodes, read through Ray's State API (`GET /api/v0/nodes`, what
`ray list nodes` and `ray.util.state.list_nodes` read) on the dashboard's HTTP port, with
the cluster's token. Every provider reads its nodes this way: the same ALIVE / DEAD states
the GCS holds, and each node's name (`ray start --node-name`), by which a provider finds
the nodes it made.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

# The State API pages its answers; no cluster of the kit's comes near this.
LIMIT = 10_000


@dataclass
class RayNode:
    node_id: str
    alive: bool
    is_head: bool
    name: str  # --node-name, or the node's IP where none was given
    address: str  # the node's IP
    cpus: float
    memory_bytes: float


def nodes(url: str, token: str | None, timeout: float = 5.0) -> list[RayNode]:
    """The nodes the cluster knows, dead ones included.

    Raises OSError (URLError, ConnectionError, timeout) while the dashboard cannot be
    reached, and ValueError when it answers something else than the State API's reply."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(
        f"{url.rstrip('/')}/api/v0/nodes?limit={LIMIT}&detail=true", headers=headers
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = json.load(r)
    if not body.get("result", False):
        raise ValueError(f"the State API answered: {body.get('msg') or body}")
    out = []
    for n in body["data"]["result"]["result"]:
        res = n.get("resources_total") or {}
        out.append(
            RayNode(
                node_id=n["node_id"],
                alive=n["state"] == "ALIVE",
                is_head=bool(n.get("is_head_node")),
                name=n.get("node_name") or n.get("node_ip", ""),
                address=n.get("node_ip", ""),
                cpus=float(res.get("CPU", 0.0)),
                memory_bytes=float(res.get("memory", 0.0)),
            )
        )
    return out


def alive_workers(url: str, token: str | None) -> int | None:
    """How many worker nodes are alive, or None while the State API does not answer."""
    try:
        return sum(1 for n in nodes(url, token) if n.alive and not n.is_head)
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


def alive_worker_names(url: str, token: str | None) -> set[str] | None:
    """The names of the alive worker nodes, or None while the State API does not answer."""
    try:
        return {n.name for n in nodes(url, token) if n.alive and not n.is_head}
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None
