"""Nothing of a local cluster is open to the network: every port its processes listen on is
bound to loopback, closed to a machine next to this one (a network namespace the test makes,
joined by a veth pair), and every Ray gRPC server and agent refuses a client without the
cluster's token. The docker provider's published ports are probed the same way in
tests/test_docker.py; `make probe` writes the whole table (docs/reliability.md)."""

from __future__ import annotations

import socket

import pytest
from conftest import recorded_pids, tree_pids

from rayscale import exposure

pytestmark = pytest.mark.cluster


def test_every_port_of_a_local_cluster_is_loopback_only_and_token_guarded(cluster):
    procs, rec = recorded_pids(cluster)
    token = (cluster / "auth_token").read_text().strip()
    rows = [exposure.with_and_without_token(r, token) for r in exposure.listening(tree_pids(procs))]
    servers = [r.protocol for r in rows]
    nodes = 1 + len(rec["workers"])
    # One GCS; per node a raylet (node manager, object manager) and an agent.
    assert servers.count("grpc gcs") == 1, rows
    for server in ("node manager", "object manager", "agent"):
        assert servers.count(f"grpc {server}") == nodes, rows
    open_to_network = [r for r in rows if not r.loopback]
    assert not open_to_network, open_to_network
    # Loopback is reachable by every user of this machine: the token still guards each server.
    grpc_rows = [r for r in rows if r.protocol.startswith("grpc")]
    assert all(r.without_token == "UNAUTHENTICATED" and r.with_token == "OK" for r in grpc_rows), (
        grpc_rows
    )
    api_port = int(rec["dashboard_url"].rsplit(":", 1)[1])
    (api,) = [r for r in rows if r.port == api_port]
    assert (api.without_token, api.with_token) == ("401", "200"), api


def test_a_machine_next_to_this_one_reaches_no_port_of_a_local_cluster(cluster):
    why_not = exposure.why_no_namespace()
    if why_not:
        pytest.skip(why_not)
    procs, _ = recorded_pids(cluster)
    ports = [r.port for r in exposure.listening(tree_pids(procs))]
    # The probe must be able to see an open port: one listening on every interface.
    with socket.create_server(("0.0.0.0", 0)) as control, exposure.namespace() as ns:
        control_port = control.getsockname()[1]
        seen = ns.connect([*ports, control_port])
    assert seen.pop(control_port) == "open"
    assert seen and set(seen.values()) == {"refused"}, seen
