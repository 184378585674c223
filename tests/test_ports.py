"""What a local cluster (plain Ray, as `ray start` runs it) leaves open: the dashboard and
Job API on loopback only, closed to a machine next to this one (a network namespace the
test makes, joined by a veth pair); every Ray gRPC server refuses a client without the
cluster's token; every HTTP port answers nothing without the token but Ray's Prometheus
metrics exporters, which serve read-only metrics to anyone. The docker provider's published
ports are probed the same way in tests/test_docker.py; `make probe` writes the whole table
(docs/reliability.md)."""

from __future__ import annotations

import socket

import pytest
from conftest import recorded_pids, tree_pids

from bench import exposure

pytestmark = pytest.mark.cluster


def _rows(cluster):
    procs, rec = recorded_pids(cluster)
    token = (cluster / "auth_token").read_text().strip()
    rows = [exposure.with_and_without_token(r, token) for r in exposure.listening(tree_pids(procs))]
    return rows, rec


def test_every_port_of_a_local_cluster_is_token_guarded_or_metrics(cluster):
    rows, rec = _rows(cluster)
    servers = [r.protocol for r in rows]
    nodes = 1 + len(rec["workers"])
    # One GCS; per node a raylet (node manager, object manager) and an agent.
    assert servers.count("grpc gcs") == 1, rows
    for server in ("node manager", "object manager", "agent"):
        assert servers.count(f"grpc {server}") == nodes, rows
    grpc_rows = [r for r in rows if r.protocol.startswith("grpc")]
    assert all(r.without_token == "UNAUTHENTICATED" and r.with_token == "OK" for r in grpc_rows), (
        grpc_rows
    )
    api_port = int(rec["dashboard_url"].rsplit(":", 1)[1])
    (api,) = [r for r in rows if r.port == api_port]
    assert api.loopback and (api.without_token, api.with_token) == ("401", "200"), api
    # Nothing else answers a client without the token, Ray's metrics exporters aside.
    http = [r for r in rows if r.protocol == "http"]
    assert all(r.without_token in ("401", "403", "404") for r in http), http


def test_a_machine_next_to_this_one_reaches_no_job_api_and_no_unguarded_port(cluster):
    why_not = exposure.why_no_namespace()
    if why_not:
        pytest.skip(why_not)
    rows, rec = _rows(cluster)
    ports = [r.port for r in rows]
    # The probe must be able to see an open port: one listening on every interface.
    with socket.create_server(("0.0.0.0", 0)) as control, exposure.namespace() as ns:
        control_port = control.getsockname()[1]
        seen = ns.connect([*ports, control_port])
    assert seen.pop(control_port) == "open"
    api_port = int(rec["dashboard_url"].rsplit(":", 1)[1])
    assert seen[api_port] == "refused"
    reached = {r.port: r for r in rows if seen[r.port] == "open"}
    unguarded = [
        r
        for r in reached.values()
        if not (r.protocol.startswith("grpc") and r.without_token == "UNAUTHENTICATED")
        and r.protocol != "metrics"
        and r.without_token not in ("401", "403")
    ]
    assert not unguarded, unguarded
