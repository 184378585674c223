"""Node readiness read straight from the GCS (``ray status`` output is meant for people).

The GCS client authenticates with the token Ray's process-wide token loader holds, read
from the environment and then cached. So the token goes into this process's environment,
and the cache is reset whenever the process turns to another cluster (a test run or a
benchmark brings up several, one after another). One cluster at a time per process.
"""

from __future__ import annotations

import os
import threading
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
    else:
        os.environ.pop("RAY_AUTH_TOKEN", None)
    # Heavy imports, only when a cluster is polled.
    from ray._raylet import AuthenticationTokenLoader, GcsClient

    AuthenticationTokenLoader.instance().reset_cache()
    return GcsClient(address=gcs_address)


_current: dict = {}


def preload() -> threading.Thread:
    """Import Ray's GCS client in the background (~1 s): call it before starting nodes,
    so the first readiness poll does not pay for the import after the nodes are up."""

    def load():
        from ray._raylet import GcsClient  # noqa: F401

    t = threading.Thread(target=load, daemon=True)
    t.start()
    return t


def nodes(gcs_address: str, token: str | None, timeout: float = 5.0) -> list[GcsNode]:
    key = (gcs_address, token)
    if _current.get("key") != key:
        _current.update(key=key, client=_client(gcs_address, token))
    infos = _current["client"].get_all_node_info(timeout=timeout)
    out = []
    for info in infos.values():
        res = dict(info.resources_total)
        out.append(
            GcsNode(
                node_id=info.node_id.hex()
                if isinstance(info.node_id, bytes)
                else str(info.node_id),
                alive=info.state == 0,  # GcsNodeInfo.GcsNodeState.ALIVE
                is_head=bool(info.is_head_node),
                node_manager_port=int(info.node_manager_port),
                address=info.node_manager_address,
                cpus=float(res.get("CPU", 0.0)),
                memory_bytes=float(res.get("memory", 0.0)),
            )
        )
    return out
