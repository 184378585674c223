"""Every call to a cluster's API is bounded: a half-open connection (a server that accepts and
never answers) costs a command RAYSCALE_API_TIMEOUT, not forever; and a connection lost
while a job is followed never stops the job."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from conftest import assert_one_line_error, run_cli

from rayscale.manifests import PROFILES
from rayscale.providers import rayjob


@pytest.fixture
def half_open():
    """A TCP server that accepts every connection and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
    for c in held:
        c.close()


def test_a_job_api_that_never_answers_is_one_line_after_the_timeout(tmp_path, half_open):
    t0 = time.monotonic()
    p = run_cli(
        "job", "status", "raysubmit_x", "--address", f"http://127.0.0.1:{half_open}",
        state_dir=tmp_path / "s", env={"RAY_AUTH_TOKEN": "t" * 64, "RAYSCALE_API_TIMEOUT": "2"},
        timeout=120,
    )  # fmt: skip
    assert_one_line_error(p, "did not answer within 2 s", "RAYSCALE_API_TIMEOUT")
    assert time.monotonic() - t0 < 30


def test_a_kubernetes_api_that_never_answers_is_one_line_after_the_timeout(tmp_path, half_open):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{half_open}"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    state = tmp_path / "s"
    state.mkdir()
    (state / "cluster.json").write_text(json.dumps({
        "provider": "kuberay", "context": "x", "namespace": "ml", "name": "rs-x", "owned": True,
        "forward_port": 1, "dashboard_url": "http://127.0.0.1:1"}))  # fmt: skip
    t0 = time.monotonic()
    p = run_cli("cluster", "down", state_dir=state, timeout=120,
                env={"KUBECONFIG": str(kubeconfig), "RAYSCALE_API_TIMEOUT": "2"})  # fmt: skip
    assert_one_line_error(p, "the Kubernetes cluster is unreachable", "may still run")
    assert (state / "cluster.json").exists()
    assert time.monotonic() - t0 < 60


class _ApiThatStopsAnswering:
    """Stands in for the API server (a real one cannot be made to drop a client on cue):
    answers the RayJob's status twice, then every call fails as a dropped connection does."""

    def __init__(self):
        self.calls, self.deleted = 0, False

    def get_namespaced_custom_object(self, *a):
        self.calls += 1
        if self.calls > 2:
            raise ConnectionResetError("connection reset by peer")
        return {"status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}}

    def list_namespaced_pod(self, *a, **kw):
        return type("Pods", (), {"items": []})()

    def delete_namespaced_custom_object(self, *a):
        self.deleted = True


def test_a_lost_connection_while_following_a_rayjob_leaves_it_running_stub_api(monkeypatch):
    monkeypatch.setattr(rayjob, "LOST_GRACE_S", 3.0)
    api = _ApiThatStopsAnswering()
    monkeypatch.setattr(rayjob.RayJobRun, "create", lambda self, doc: None)
    with pytest.raises(rayjob.Lost, match="it runs on.*kubectl -n ml get rayjob"):
        rayjob.run(api, api, "ml", "rs-x", PROFILES["kind"], [], None, lambda line: None)
    assert not api.deleted, "a lost connection deleted the RayJob (KubeRay would stop the job)"
