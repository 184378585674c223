"""Node readiness read straight from the GCS (``ray status`` output is meant for people).

The GCS client authenticates with the token from the environment, so the token is put in
this process's environment before the first call. One process talks to one cluster at a
time; that is how the CLI and the scaling study use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class GcsNode:
    node_id: str
    alive: bool
    is_head: bool
    node_manager_port: int
    address: str
    cpus: float
    memory_bytes: float


def _client(gcs_address: str, token: str | None):
    os.environ["RAY_AUTH_MODE"] = "token" if token else "disabled"
    if token:
        os.environ["RAY_AUTH_TOKEN"] = token
    from ray._raylet import GcsClient  # heavy import, only when a cluster is polled

    return GcsClient(address=gcs_address)


_clients: dict[tuple[str, str | None], object] = {}


def nodes(gcs_address: str, token: str | None, timeout: float = 5.0) -> list[GcsNode]:
    key = (gcs_address, token)
    if key not in _clients:
        _clients[key] = _client(gcs_address, token)
    infos = _clients[key].get_all_node_info(timeout=timeout)
    out = []
    for info in infos.values():
        res = dict(info.resources_total)
        out.append(
            GcsNode(
                node_id=info.node_id.hex() if isinstance(info.node_id, bytes) else str(info.node_id),
                alive=info.state == 0,  # GcsNodeInfo.GcsNodeState.ALIVE
                is_head=bool(info.is_head_node),
                node_manager_port=int(info.node_manager_port),
                address=info.node_manager_address,
                cpus=float(res.get("CPU", 0.0)),
                memory_bytes=float(res.get("memory", 0.0)),
            )
        )
    return out
