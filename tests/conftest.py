"""Shared fixtures: a real local Ray cluster (head + 2 workers), driven through the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest

from rayscale import procs as rayscale_procs

ROOT = Path(__file__).resolve().parent.parent


def _shared(env: str, name: str) -> Path:
    """Test inputs kept beside the repository (../shared/NAME) or wherever ENV points."""
    return Path(os.environ.get(env) or ROOT.parent / "shared" / name)


DATASETS = _shared("RAYSCALE_DATASETS", "datasets")
CRDS = _shared("RAYSCALE_KUBERAY_CRDS", "kuberay-crds")
# A clone on its own has neither: the tests that read them skip, saying how to provide them.
needs_datasets = pytest.mark.skipif(
    not (DATASETS / "insurance.csv").is_file() or not (DATASETS / "concrete.csv").is_file(),
    reason=f"no datasets at {DATASETS}: set RAYSCALE_DATASETS to a folder with insurance.csv and concrete.csv",
)
needs_crds = pytest.mark.skipif(
    not (CRDS / "ray.io_rayclusters.yaml").is_file()
    or not (CRDS / "ray.io_rayjobs.yaml").is_file(),
    reason=f"no KubeRay CRDs at {CRDS}: set RAYSCALE_KUBERAY_CRDS to a folder with KubeRay v1.7.0's "
    "ray.io_rayclusters.yaml and ray.io_rayjobs.yaml (ray-operator/config/crd/bases)",
)
RAYSCALE = str(Path(sys.executable).parent / "rayscale")
# A test run started in the background of a non-interactive shell (`.ci/run &`, nohup)
# inherits SIGINT ignored, and so would every CLI a test sends Ctrl-C to (it would then
# finish its `cluster up` as if nothing was pressed). The run takes a terminal's default
# instead, which the processes it starts then begin with.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Trials of a few seconds each, so that a node killed right after the first trial ends is
# always in the middle of one (the gap between trials on a node is ~0.05 s).
FAULT_JOB = [
    "--data",
    "synthetic:rows=40000,features=20,noise=1.0,seed=3",
    "--num-samples",
    8,
    "--max-rounds",
    300,
    "--scheduler",
    "fifo",
    "--checkpoint-every",
    50,
    "--checkpoint-min-s",
    0,
    "--seed",
    5,
]
N = 8  # FAULT_JOB's --num-samples
TINY = ["--data", "synthetic:rows=600,features=6,noise=0.5,seed=1", "--max-rounds", "20"]


S3_VENV = ROOT / ".venv-s3"  # moto's server: its botocore pins clash with the kubernetes client
MLFLOW_VENV = ROOT / ".venv-mlflow"  # the full MLflow server pins its own pyarrow and dateutil


class S3:
    """A local S3-compatible server (moto in server mode), reached with pyarrow's S3 client:
    signed requests, as the job makes them."""

    ENV = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def __init__(self, url: str):
        from pyarrow import fs

        self.url = url
        scheme, host = url.split("://", 1)
        self.fs = fs.S3FileSystem(
            access_key="test",
            secret_key="test",
            region="us-east-1",
            scheme=scheme,
            endpoint_override=host,
            allow_bucket_creation=True,
        )

    @property
    def env(self) -> dict[str, str]:
        return {**self.ENV, "AWS_ENDPOINT_URL": self.url}

    def make_bucket(self, name: str) -> None:
        self.fs.create_dir(name)

    def put(self, key: str, body: bytes) -> None:
        with self.fs.open_output_stream(key) as f:
            f.write(body)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        from pyarrow import fs

        found = self.fs.get_file_info(
            fs.FileSelector(f"{bucket}/{prefix}".rstrip("/"), recursive=True)
        )
        return [i.path.split("/", 1)[1] for i in found if i.type == fs.FileType.File]


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server(exe: Path, make_target: str, args: list[str], url: str, what: str, wait_s: float = 30):
    """A real server from a venv of its own (`make test` makes it), up until the block ends."""
    import urllib.request

    if not exe.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{exe} is missing: `make test` installs it", pytrace=False)
        pytest.skip(f"no {what} ({exe}; `make {make_target}`)")
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return True
        except OSError:
            return False

    try:
        from rayscale import procs

        assert procs.wait_for(up, wait_s, interval=0.2), f"the {what} did not start"
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def s3_server(host: str = "127.0.0.1"):
    port = _free_port(host)
    url = f"http://{host}:{port}"
    with _server(
        S3_VENV / "bin" / "moto_server",
        "s3-venv",
        ["-H", host, "-p", str(port)],
        url,
        "S3-compatible server",
    ):
        yield S3(url)


@contextlib.contextmanager
def mlflow_server(root: Path, host: str = "127.0.0.1"):
    """A real MLflow tracking server, SQLite backend; yields its URI."""
    port = _free_port(host)
    url = f"http://{host}:{port}"
    args = [
        "server",
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--default-artifact-root",
        str(root / "artifacts"),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with _server(
        MLFLOW_VENV / "bin" / "mlflow", "mlflow-venv", args, f"{url}/health", "MLflow server", 90
    ):
        yield url


def run_cli(*args, state_dir=None, env=None, timeout=300, check=False):
    e = dict(os.environ)
    e.pop("RAY_ADDRESS", None)
    e.pop("RAY_API_SERVER_ADDRESS", None)
    if state_dir:
        e["RAYSCALE_STATE_DIR"] = str(state_dir)
    e.update(env or {})
    p = subprocess.run(
        [RAYSCALE, *map(str, args)],
        capture_output=True,
        text=True,
        env=e,
        timeout=timeout,
        cwd=ROOT,
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"rayscale {' '.join(map(str, args))} failed:\n{p.stdout}\n{p.stderr}"
            + log_tails(p.stderr)
        )
    return p


def log_tails(text: str, lines: int = 12) -> str:
    """The last lines of every log file, or file in a log folder, that an error names: a
    failed `up` names its nodes' logs, and on CI they are gone with the machine."""
    out = []
    for path in dict.fromkeys(re.findall(r"(/[^\s,;()]+)", text)):
        p = Path(path)
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                tail = f.read_text(errors="replace").splitlines()[-lines:]
                out += [f"--- {f} (last {len(tail)} lines)", *tail]
    return "\n" + "\n".join(out) if out else ""


def wait_for_progress(state, job_id: str, done: int, timeout: float = 180) -> str:
    """Block until the job has reported `done` finished trials; returns its log so far."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = run_cli("job", "logs", job_id, state_dir=state).stdout
        if sum(1 for line in logs.splitlines() if line.startswith("RAYSCALE_PROGRESS")) >= done:
            return logs
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} made no progress:\n{logs[-2000:]}")


def wait_for_end(state, job_id: str, timeout: float = 400) -> tuple[str, str]:
    """Block until the job leaves PENDING / RUNNING; returns (status, log)."""
    import time

    status, deadline = "RUNNING", time.monotonic() + timeout
    while status in ("PENDING", "RUNNING") and time.monotonic() < deadline:
        status = run_cli("job", "status", job_id, state_dir=state).stdout.strip()
        time.sleep(1)
    return status, run_cli("job", "logs", job_id, state_dir=state).stdout


def assert_one_line_error(p, *needles):
    """A user error: exit != 0, one error line (the last thing said), no traceback.

    Progress lines before it (e.g. "submitted raysubmit_...") are allowed.
    """
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], f"want one error line, got:\n{p.stderr}"
    for n in needles:
        assert n.lower() in errors[0].lower(), f"{n!r} not in {errors[0]!r}"
    return errors[0]


def recorded_pids(state_dir: Path) -> list[dict]:
    rec = json.loads((Path(state_dir) / "cluster.json").read_text())
    return [rec["head"]["proc"], *[w["proc"] for w in rec["workers"]]], rec


def tree_pids(procs: list[dict]) -> set[int]:
    return set(rayscale_procs.tree(pr["pid"] for pr in procs))


def kill_all(pids: set[int]) -> None:
    """SIGKILL every process given and wait until each is gone: a machine that dies."""
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.kill()
            procs.append(p)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=15)


def assert_all_gone(pids: set[int], temp_root: str | None = None):
    alive = [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert not alive, f"processes left behind: {alive}"
    if temp_root:
        assert not Path(temp_root).exists(), f"temp dir left behind: {temp_root}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A real local cluster: head (num-cpus 0) + 2 one-CPU workers. Torn down and checked."""
    state = tmp_path_factory.mktemp("state")
    run_cli(
        "cluster", "up", "--workers", 2, "--memory-per-worker", 1.5, state_dir=state, check=True
    )
    procs, rec = recorded_pids(state)
    try:
        yield state
    finally:
        # Re-read: tests scale the cluster, so the worker set may have changed.
        if (state / "cluster.json").exists():
            procs, rec = recorded_pids(state)
        pids = tree_pids(procs)
        run_cli("cluster", "down", state_dir=state, check=True)
        assert_all_gone(pids, rec["temp_root"])


@pytest.fixture(scope="session", autouse=True)
def _results_outside_the_repo(tmp_path_factory):
    """Commands write results/ under the current directory, the repo for run_cli: tests
    write theirs to a temp dir instead."""
    os.environ["RAYSCALE_RESULTS_DIR"] = str(tmp_path_factory.mktemp("cwd-results"))
    yield
    os.environ.pop("RAYSCALE_RESULTS_DIR", None)


@pytest.fixture
def own_tmpdir():
    """A TMPDIR of the test's own, for the CLI it runs: what the kit leaves in TMPDIR is
    then this test's alone, whatever runs beside it. Short: Ray's socket paths under it
    must stay within 107 bytes."""
    d = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


# ---- Docker, the kit's image, and the Kubernetes emulator whose pods run on them ----------

DOCKER = os.environ.get("RAYSCALE_DOCKER") or shutil.which("docker") or "docker"
IMAGE = os.environ.get("RAYSCALE_IMAGE", "rayscale:0.1.0")


def docker(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DOCKER, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def _docker_missing() -> str | None:
    try:
        if docker("info", timeout=20).returncode != 0:
            return "no Docker engine answers"
    except (OSError, subprocess.TimeoutExpired):
        return "no docker command"
    if not docker("images", "-q", IMAGE).stdout.strip():
        return f"image {IMAGE} not built (make image)"
    return None


_DOCKER_MISSING: list[str | None] = []


def needs_docker() -> pytest.MarkDecorator:
    """Skip without a Docker engine and the kit's image; under CI (env CI set), where .ci/run
    starts the engine and builds the image, their absence fails the module instead."""
    if not _DOCKER_MISSING:
        _DOCKER_MISSING.append(_docker_missing())
    why = _DOCKER_MISSING[0]
    if why and os.environ.get("CI"):
        pytest.fail(f"these tests cannot run under CI: {why}", pytrace=False)
    return pytest.mark.skipif(why is not None, reason=why or "")


FAKE_KUBECTL = str(Path(__file__).with_name("fake_kubectl.py"))
CONTEXT = "emulated-kind"


def kubeconfig(path: Path, current: str = CONTEXT, server: str = "https://127.0.0.1:1") -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": current,
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [
                    {"name": n, "context": {"cluster": "c", "user": "u"}}
                    for n in (CONTEXT, "other")
                ],
            }
        )
    )
    return path


@pytest.fixture
def emulate(tmp_path, monkeypatch):
    """make(...) -> a KubeEmulator (tests/kube_emulator.py); the kubectl port-forward
    stand-in follows its head pods."""
    from kube_emulator import KubeEmulator

    made: list[KubeEmulator] = []
    targets = tmp_path / "targets.json"
    targets.write_text("{}")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.setenv("RAYSCALE_KUBECTL", FAKE_KUBECTL)
    monkeypatch.setenv("FAKE_KUBE_TARGETS", str(targets))
    stop = threading.Event()

    def follow():  # svc/<name>-head-svc -> the head pod's IP, as the Service's endpoints would
        while not stop.wait(0.5):
            found = {
                f"{n}-head-svc": a
                for e in made
                for (ns, n) in list(e.objects)
                if (a := e.head_address(ns, n))
            }
            targets.write_text(json.dumps(found))

    threading.Thread(target=follow, daemon=True).start()

    def make(**kw) -> KubeEmulator:
        e = KubeEmulator(tmp_path / f"kube{len(made)}", namespaces=("default", "ml"), **kw)
        made.append(e)
        return e

    yield make
    stop.set()
    stop_forwards(tmp_path)  # a test that failed between up and down left its tunnel
    for e in made:
        e.shutdown()
        assert e.leftovers() == [], "containers or networks left behind"


def stop_forwards(root: Path) -> None:
    """Stop every port-forward supervisor recorded in a cluster record under root."""
    for rec_file in root.rglob("cluster.json"):
        with contextlib.suppress(OSError, ValueError):
            fwd = json.loads(rec_file.read_text()).get("forward")
            if isinstance(fwd, dict) and rayscale_procs.alive(fwd):
                rayscale_procs.stop(fwd, grace=3)
