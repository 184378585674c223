"""Nothing lost: a teardown that fails says so and keeps what a retry needs; results and a
user's own folders outlive `down`; names cannot write outside their folder."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest
from conftest import DOCKER, ROOT, assert_one_line_error, needs_docker, run_cli

from rayscale.errors import UserError


def test_a_failed_ray_down_keeps_the_record_until_down_succeeds(tmp_path):
    """The real `ray` on the shipped aws.yaml, on a machine without the AWS SDK: `ray up`
    fails, and so does the `ray down` that cleans after it. Cloud VMs might still run and
    bill, so the record, the rendered config and the logs stay, `down` exits non-zero and
    names `ray down -y <config>`, until `down --forget` drops the record."""
    state = tmp_path / "state"
    no_aws = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    up = run_cli(
        "cluster", "up", "--provider", "ray-up", "--config", ROOT / "cluster" / "aws.yaml",
        state_dir=state, env=no_aws, timeout=300,
    )  # fmt: skip
    assert_one_line_error(up, "`ray up` failed", "ray-up.log")
    assert "cleaning up after the failed up did not finish" in up.stderr
    cfg = state / "config" / "cluster.yaml"
    assert (state / "cluster.json").exists() and cfg.exists(), "a retry needs the record"

    down = run_cli("cluster", "down", state_dir=state, env=no_aws, timeout=300)
    line = assert_one_line_error(down, "cluster down did not finish", "may still run")
    assert f"ray down -y {cfg}" in line and "run `rayscale cluster down` again" in line
    assert (state / "cluster.json").exists() and cfg.exists()
    assert (state / "logs" / "ray-down.log").exists(), "the log the line names is kept"

    gone = run_cli("cluster", "down", "--forget", state_dir=state, timeout=60)
    assert gone.returncode == 0 and "nothing was stopped" in gone.stdout, gone.stderr
    assert not (state / "cluster.json").exists() and not (state / "config").exists()


@needs_docker()
def test_down_without_a_docker_engine_keeps_the_record_then_finishes(tmp_path):
    """The engine does not answer (stopped, a context gone): `down` cannot tell whether the
    containers still run, so it keeps the record and exits non-zero. With the engine back
    it finishes, and names the results volume it keeps."""
    state = tmp_path / "state"
    state.mkdir()
    volume = "rayscale-default-0000test-results"
    (state / "cluster.json").write_text(
        json.dumps(
            {
                "provider": "docker",
                "cluster_id": "0000test",
                "network": "rayscale-0000test",
                "volume": volume,
                "workers": [],
                "head": {"name": "rayscale-0000test-head"},
            }
        )
    )
    dead = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "RAYSCALE_DOCKER": DOCKER}
    p = run_cli("cluster", "down", state_dir=state, env=dead, timeout=120)
    assert_one_line_error(p, "cluster down did not finish", "no Docker engine answers")
    assert (state / "cluster.json").exists()

    p = run_cli("cluster", "down", state_dir=state, env={"RAYSCALE_DOCKER": DOCKER}, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"results kept in Docker volume {volume}" in p.stderr
    assert not (state / "cluster.json").exists()


def test_down_deletes_only_the_folders_the_kit_made(tmp_path):
    """`--state-dir .` in a project folder: the user's own config/ and logs/ stay; the logs
    folder of a cluster the kit made beside it goes with that cluster."""
    project = tmp_path / "project"
    for d in ("config", "logs"):
        (project / d).mkdir(parents=True)
        (project / d / "mine.txt").write_text("the user's own\n")
    (project / "cluster.json").write_text(json.dumps({"provider": "local", "workers": []}))
    other = project / "clusters" / "other"
    other.mkdir(parents=True)
    (other / "cluster.json").write_text(json.dumps({"provider": "local", "workers": []}))
    from rayscale.state import StateDir

    (StateDir(project, "other").logs_dir / "w0.log").write_text("the kit's\n")

    for extra in ([], ["--cluster", "other"]):
        p = run_cli("cluster", "down", *extra, state_dir=project, timeout=60)
        assert p.returncode == 0, p.stderr
    assert (project / "config" / "mine.txt").exists() and (project / "logs" / "mine.txt").exists()
    assert not (project / "cluster.json").exists()
    assert not (other / "logs").exists() and not (other / "cluster.json").exists()


def test_make_clean_keeps_the_records_of_clusters_still_recorded(tmp_path):
    """`make clean` would delete the records and tokens of running clusters: it refuses, in
    one line naming them, until they are down."""
    record = tmp_path / ".rayscale" / "clusters" / "big" / "cluster.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    make = ["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path), "clean"]
    p = subprocess.run(make, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and record.exists(), p.stdout + p.stderr
    assert "cluster down" in p.stdout + p.stderr and str(record.relative_to(tmp_path)) in p.stderr
    record.unlink()
    p = subprocess.run(make, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not (tmp_path / ".rayscale").exists(), p.stderr


@pytest.mark.parametrize("name", ["abc\n", "../x", "Big"])
def test_a_cluster_name_is_checked_whole(tmp_path, name):
    """`re.match` with `$` passes "abc\\n": the whole name must be a DNS label."""
    p = run_cli("cluster", "status", "--cluster", name, state_dir=tmp_path / "s", timeout=60)
    assert_one_line_error(p, "is not 1-20 lowercase letters")
    assert not (tmp_path / "s").exists()


def test_a_job_record_stays_in_results_and_never_overwrites_another(tmp_path, monkeypatch):
    from rayscale import report

    monkeypatch.setenv("RAYSCALE_RESULTS_DIR", str(tmp_path / "results"))
    first = report.save_result({"name": "run", "n": 1}, None)
    second = report.save_result({"name": "run", "n": 2}, None)
    assert (first.name, second.name) == ("run.json", "run-2.json")
    assert json.loads(first.read_text())["n"] == 1
    sneaky = report.save_result({"name": "../../x"}, None)
    assert sneaky.parent == tmp_path / "results", sneaky


def test_docker_keeps_no_token_in_argv_it_passes(tmp_path):
    """The token goes to `docker run` in a 0600 env file, never on a command line any local
    user can read in /proc/*/cmdline."""
    from rayscale.providers.docker import DockerProvider
    from rayscale.state import StateDir

    p = DockerProvider(StateDir(tmp_path / "s"), image="rayscale:test")
    p.state.new_token()
    p._token_env()  # as `up` does before its first `docker run`
    argv = p._run_args({"network": "n", "cluster_id": "c", "volume": "v"}, "x", 1.0, 1.0)
    token = p.state.token()
    assert token and not any(token in a for a in argv)
    env_file = argv[argv.index("--env-file") + 1]
    assert os.stat(env_file).st_mode & 0o077 == 0
    assert open(env_file).read().strip() == f"RAY_AUTH_TOKEN={token}"


def test_a_read_only_command_never_brings_back_a_record_down_cleared(tmp_path):
    """A forward restarted by `status` or `job submit` updates the record only while it
    still records the same cluster: not after `down` cleared it, not over a new one."""
    from rayscale.state import StateDir

    s = StateDir(tmp_path / "s")
    old = {"provider": "kuberay", "created": 1.0, "forward": {"pid": 1}}
    s.write(old)
    assert s.update({**old, "forward": {"pid": 2}}, "forward")
    assert s.read()["forward"] == {"pid": 2}
    s.clear()
    assert not s.update(old, "forward") and s.read() is None
    s.write({"provider": "kuberay", "created": 2.0})
    assert not s.update(old, "forward") and "forward" not in s.read()


def test_a_studys_resize_takes_the_state_dirs_lock(tmp_path):
    """`cluster scale` and `down` hold the lock: a study's resize beside them is refused,
    not run at the same time."""
    from rayscale.state import StateDir
    from rayscale.study import measure

    class Provider:  # only what measure.scale touches
        state = StateDir(tmp_path / "s")
        sizes: list[int] = []

        def scale(self, n):
            self.sizes.append(n)

    p = Provider()
    measure.scale(p, 2)
    with p.state.lock():  # another command changing the cluster
        with pytest.raises(UserError, match="another rayscale command is changing the cluster"):
            measure.scale(p, 3)
    assert p.sizes == [2]


class Stranger:
    """Another user's listener on a free loopback port (nobody's, forked from this process:
    the tests run as root in CI), writing whatever it hears to a pipe."""

    def __init__(self):
        import socket

        self.other_user = os.getuid() == 0
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: become nobody, then make the socket (its owner)
            try:
                os.close(r)
                if self.other_user:
                    os.setgid(65534)
                    os.setuid(65534)
                srv = socket.socket()
                srv.bind(("127.0.0.1", 0))
                srv.listen(4)
                os.write(w, f"{srv.getsockname()[1]}\n".encode())
                while True:
                    c, _ = srv.accept()
                    os.write(w, repr(c.recv(65536)).encode() + b"\n")
                    c.close()
            finally:
                os._exit(0)
        os.close(w)
        self.out = os.fdopen(r)
        self.port = int(self.out.readline())

    def heard(self) -> list[str]:
        self.stop()
        return self.out.read().splitlines()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)


@pytest.fixture
def stranger():
    s = Stranger()
    yield s
    s.stop()


def _proc(p: subprocess.Popen) -> dict:
    import psutil

    return {"pid": p.pid, "create_time": psutil.Process(p.pid).create_time()}


def test_the_token_goes_only_to_the_clusters_own_dashboard(tmp_path, stranger):
    """The head stopped and another process (another user's) took its port: `job list`
    refuses to send the token there, in one line, and the listener hears nothing."""
    port = stranger.port
    other = subprocess.Popen(["sleep", "120"])  # stands for the recorded head: alive, no port
    try:
        state = tmp_path / "s"
        state.mkdir()
        (state / "auth_token").write_text("s3cret" * 10)
        (state / "cluster.json").write_text(json.dumps({
            "provider": "local", "created": 1.0, "head": {"name": "head", "proc": _proc(other)},
            "workers": [], "dashboard_url": f"http://127.0.0.1:{port}"}))  # fmt: skip
        p = run_cli("job", "list", state_dir=state, timeout=60)
        assert_one_line_error(p, "no longer holds its dashboard port", "cluster down")
        assert stranger.heard() == [], "the token was sent to a stranger"
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("provider", [pytest.param("docker", marks=needs_docker()), "kuberay"])
def test_a_stranger_on_the_forwarded_or_published_port_never_gets_the_token(
    tmp_path, stranger, monkeypatch, provider
):
    """docker: the head container is gone (the real engine says it publishes nothing) and
    another process holds the port Docker had published. kuberay: the forward's supervisor
    lives but another user holds its port (its tunnel cannot bind; the tunnel may be an SSH
    connection master no process of ours started, so any listener of ours would do).
    `endpoint` and `status` refuse in one line; the stranger hears nothing."""
    from rayscale import providers
    from rayscale.providers import base
    from rayscale.state import StateDir

    port = stranger.port
    if provider == "kuberay" and not stranger.other_user:
        pytest.skip("a listener of another user needs root to start (CI runs as root)")
    url = f"http://127.0.0.1:{port}"
    supervisor = subprocess.Popen(["sleep", "120"])  # alive, listening nowhere
    state = StateDir(tmp_path / "s")
    state.path.mkdir()
    (state.path / "auth_token").write_text("s3cret" * 10)
    if provider == "docker":
        rec = {"provider": "docker", "created": 1.0, "cluster_id": "gone0",
               "head": {"name": "rayscale-gone0-head", "id": "0" * 64}, "workers": [],
               "dashboard_url": url}  # fmt: skip
        said = "no longer publishes the dashboard"
    else:
        monkeypatch.setattr(base, "FORWARD_SETTLE_S", 1.0)
        rec = {"provider": "kuberay", "created": 1.0, "context": "gone", "namespace": "ml",
               "name": "rs-gone", "owned": True, "forward_port": port, "dashboard_url": url,
               "forward": {**_proc(supervisor), "port": port}}  # fmt: skip
        said = "the forward's tunnel does not hold"
    (state.path / "cluster.json").write_text(json.dumps(rec))
    try:
        p = providers.get(provider, state)
        for call in (p.endpoint, p.status):
            with pytest.raises(UserError) as e:
                call()
            assert said in e.value.problem and "token is not sent" in e.value.problem
    finally:
        supervisor.kill()
        supervisor.wait()
    assert stranger.heard() == [], "the token was sent to a stranger"


@pytest.mark.parametrize("excludes", ["USER_EXCLUDES", "EXCLUDES"])
def test_an_upload_leaves_tokens_and_env_files_behind(tmp_path, excludes):
    """What Ray's own packaging zips for a working_dir with the kit's excludes (the lists
    `job submit` puts in runtime_env, for --working-dir and for the job dir): the code goes;
    other clusters' state dirs and tokens and .env files, at any depth, stay behind."""
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    from rayscale import jobs

    d = tmp_path / "proj"
    for f in (".rayscale/auth_token", ".rayscale-gpu/config/token.env", ".env", ".env.prod",
              "sub/.env", "sub/auth_token", "my_tune.py", "sub/helper.py"):  # fmt: skip
        (d / f).parent.mkdir(parents=True, exist_ok=True)
        (d / f).write_text("x")
    out = tmp_path / "pkg.zip"
    create_package(str(d), out, include_gitignore=True, excludes=getattr(jobs, excludes))
    names = {n.rstrip("/") for n in zipfile.ZipFile(out).namelist()}
    assert {"my_tune.py", "sub/helper.py"} <= names, names
    leaked = [n for n in names if ".rayscale" in n or ".env" in n or "auth_token" in n]
    assert leaked == [], leaked
