"""The managed port-forward (rayscale.forward) over a real cluster's dashboard.

The tunnel command here is tests/tcp_proxy.py, a real TCP forwarder standing in for
`kubectl port-forward` / `ray dashboard` (which need Kubernetes / SSH hosts). The
supervisor, the restart, and a job followed through the tunnel while it drops are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import FAKE_KUBECTL, RAYSCALE, ROOT, TINY, assert_all_gone

from rayscale import forward, procs

pytestmark = pytest.mark.cluster
PROXY = str(Path(__file__).with_name("tcp_proxy.py"))


def _jobs(url: str, token: str) -> int:
    """How many jobs the cluster lists (asked directly, not through the tunnel)."""
    req = urllib.request.Request(url + "/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return len(json.loads(r.read()))


def _answers(url: str, token: str) -> bool:
    req = urllib.request.Request(url + "/api/version", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _tunnel(sup: dict) -> psutil.Process:
    kids = psutil.Process(sup["pid"]).children()
    assert len(kids) == 1, kids
    return kids[0]


def test_tunnel_is_restarted_and_a_followed_job_survives_the_drop(cluster, tmp_path):
    rec = json.loads((cluster / "cluster.json").read_text())
    token = (cluster / "auth_token").read_text().strip()
    target = rec["dashboard_url"].rsplit(":", 1)[1]
    port = procs.free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    sup = forward.start(
        [sys.executable, PROXY, str(port), "127.0.0.1", target], port, tmp_path / "fwd.log"
    )
    seen = {sup["pid"]}
    try:
        assert _answers(url, token)
        before = _jobs(rec["dashboard_url"], token)
        # Follow a job through the tunnel, and drop the tunnel twice while it runs.
        follower = subprocess.Popen(
            [
                RAYSCALE,
                "job",
                "submit",
                "--json",
                "--address",
                url,
                "--token-file",
                str(cluster / "auth_token"),
                "--",
                *TINY,
                "--num-samples",
                "6",
                "--max-rounds",
                "200",
                "--scheduler",
                "fifo",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        # The drops come once the job runs (a submit cut off mid-call is its own case): the
        # follow is what must survive them, however long this machine took to start the CLI.
        assert procs.wait_for(lambda: _jobs(rec["dashboard_url"], token) > before, 120)
        for _ in range(2):
            time.sleep(2)
            old = _tunnel(sup)
            seen.add(old.pid)
            old.kill()
            old.wait(5)
            assert procs.wait_for(lambda: _answers(url, token), 15), "the tunnel was not restarted"
            assert _tunnel(sup).pid != old.pid
        out, err = follower.communicate(timeout=240)
        assert follower.returncode == 0, err[-2000:]
        result = json.loads(out.strip().splitlines()[-1])
        assert result["trials_completed"] == 6 and result["trials_errored"] == 0
        assert (tmp_path / "fwd.log").read_text().count("restart") >= 2
    finally:
        seen |= (
            {c.pid for c in psutil.Process(sup["pid"]).children()} if procs.alive(sup) else set()
        )
        procs.stop(sup, grace=5)
    assert_all_gone(seen)
    assert not _answers(url, token)


def test_a_tunnel_that_never_opens_is_reported(tmp_path):
    port = procs.free_ports(1)[0]
    with pytest.raises(TimeoutError, match="no such host"):
        forward.start(
            [sys.executable, "-c", "import sys; print('no such host'); sys.exit(1)"],
            port,
            tmp_path / "fwd.log",
            timeout=3,
        )


def _http_server(body: bytes):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read()
    except OSError:
        return None


def test_a_tunnel_whose_pod_was_replaced_attaches_to_the_new_one(tmp_path):
    """`kubectl port-forward svc/...` stays attached to the pod it started on and keeps
    listening after that pod is gone (kubernetes/kubernetes#67059). Its stand-in
    (tests/fake_kubectl.py) likewise resolves the Service once, at start. When the head
    is replaced, the supervisor finds no HTTP answer behind the port and restarts the
    tunnel, which then reaches the new head."""
    old, new = _http_server(b"old head"), _http_server(b"new head")
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"rs-head-svc": f"127.0.0.1:{old.server_address[1]}"}))
    port = procs.free_ports(1)[0]
    url = f"http://127.0.0.1:{port}/api/version"
    log = tmp_path / "fwd.log"
    sup = forward.start(
        [sys.executable, FAKE_KUBECTL, "port-forward", "svc/rs-head-svc", f"{port}:8265"],
        port,
        log,
        env={**os.environ, "FAKE_KUBE_TARGETS": str(targets)},
    )
    try:
        assert _get(url) == b"old head"
        old.shutdown()
        old.server_close()  # the old head pod is gone; the Service now points at the new one
        targets.write_text(json.dumps({"rs-head-svc": f"127.0.0.1:{new.server_address[1]}"}))
        assert procs.wait_for(lambda: _get(url) == b"new head", 40), log.read_text()
        assert "no HTTP answer through the tunnel" in log.read_text()
    finally:
        kids = {c.pid for c in psutil.Process(sup["pid"]).children()} if procs.alive(sup) else set()
        procs.stop(sup, grace=5)
        new.shutdown()
    assert_all_gone(kids | {sup["pid"]})
