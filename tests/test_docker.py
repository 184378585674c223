"""The kit's image and the docker provider, on a real Docker engine.

.ci/run installs and starts the engine and builds the image (make image-base, make image)
before the tests; elsewhere these tests skip when no engine or image is there, and fail
under CI (env CI set), where a skip would hide a broken build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from conftest import (
    DOCKER,
    FAULT_JOB,
    IMAGE,
    ROOT,
    TINY,
    N,
    docker,
    needs_docker,
    run_cli,
    wait_for_end,
    wait_for_progress,
)

from bench import exposure

pytestmark = [needs_docker(), pytest.mark.cluster]


def _up(state, check=False):
    """Two one-GiB workers of the kit's image."""
    return run_cli(
        "cluster",
        "up",
        "--provider",
        "docker",
        "--image",
        IMAGE,
        "--workers",
        2,
        "--memory-per-worker",
        1,
        state_dir=state,
        check=check,
        timeout=300,
    )


def _result(text: str) -> dict:
    (line,) = [x for x in text.splitlines() if x.startswith("RAYSCALE_RESULT ")]
    return json.loads(line.split(" ", 1)[1])


def test_image_runs_the_job_as_non_root():
    p = docker(
        "run",
        "--rm",
        IMAGE,
        "python",
        "tune_xgboost.py",
        "--mode",
        "sequential",
        *TINY,
        "--num-samples",
        2,
        "--storage-path",
        "/tmp/results",
    )
    assert p.returncode == 0, p.stderr[-2000:]
    rec = _result(p.stdout)
    assert rec["trials_completed"] == 2 and rec["versions"]["ray"] == "2.60.0"
    ident = docker("run", "--rm", IMAGE, "sh", "-c", "id -u; python -c 'import xgboost'")
    assert ident.returncode == 0, ident.stderr
    assert ident.stdout.split()[0] == "1000"
    # The job's code is root's: a job (uid 1000) cannot rewrite what later jobs run.
    code = docker("run", "--rm", IMAGE, "sh", "-c",
                  "stat -c %u /opt/rayscale/job/tune_xgboost.py; touch tune_xgboost.py")  # fmt: skip
    assert code.stdout.split()[0] == "0" and code.returncode != 0, code.stdout + code.stderr
    # KubeRay's autoscaler sidecar and Redis cleanup Job run under a login shell, which
    # resets PATH from /etc/profile: Ray must still be found there.
    login = docker("run", "--rm", "--entrypoint", "/bin/bash", IMAGE, "-lc", "--",
                   "ray --version && python -c 'import ray'")  # fmt: skip
    assert login.returncode == 0 and "2.60.0" in login.stdout, login.stderr[-500:]
    labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", IMAGE).stdout)
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.source"]


def _leftovers(cid: str) -> list[str]:
    out = []
    for kind in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
        out += docker(*kind, "--filter", f"label=rayscale.cluster={cid}").stdout.split()
    return out


def _closed_to_the_network(rec: dict, token: str) -> None:
    """Published on loopback only, so closed to a machine next to this one (a network
    namespace); inside the cluster's network, the GCS refuses a client without the token."""
    ports = docker("port", rec["head"]["name"]).stdout
    pairs = re.findall(r"-> (\S+):(\d+)$", ports, re.M)
    assert pairs and {ip for ip, _ in pairs} == {"127.0.0.1"}, ports
    published = [int(port) for _, port in pairs]
    if not exposure.why_no_namespace():
        with exposure.namespace() as ns:
            assert set(ns.connect(published).values()) == {"refused"}
    head_ip = docker(
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        rec["head"]["name"],
    ).stdout.strip()
    gcs = exposure.GRPC_METHODS["gcs"]
    assert exposure.grpc_call(head_ip, 6379, gcs, None) == "UNAUTHENTICATED"
    assert exposure.grpc_call(head_ip, 6379, gcs, token) == "OK"


def test_docker_provider_cluster_end_to_end(tmp_path):
    state = tmp_path / "state"
    up = _up(state)
    assert up.returncode == 0, up.stdout + up.stderr
    rec = json.loads((state / "cluster.json").read_text())
    cid = rec["cluster_id"]
    try:
        assert rec["dashboard_url"].startswith("http://127.0.0.1:")
        _closed_to_the_network(rec, (state / "auth_token").read_text().strip())
        st = json.loads(run_cli("cluster", "status", "--json", state_dir=state, check=True).stdout)
        assert st["alive_workers"] == 2 and [
            n["cpus"] for n in st["nodes"] if n["role"] == "head"
        ] == [0]
        p = run_cli(
            "job",
            "submit",
            "--json",
            "--",
            *TINY,
            "--num-samples",
            4,
            "--scheduler",
            "fifo",
            state_dir=state,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
        res = json.loads(p.stdout)
        assert res["trials_completed"] == 4 and res["cluster"]["worker_nodes"] == 2
        assert len({t["node_id"] for t in res["trials"]}) >= 1
        _job_runs_from_the_image_unless_changed(state, tmp_path)
        _results_come_home(state, tmp_path, res)
        _storage_is_shared_or_refused(state)
    finally:
        down = run_cli("cluster", "down", state_dir=state, timeout=300)
    assert _leftovers(cid) == []
    assert not (state / "cluster.json").exists()
    # The runs outlive the cluster (`job resume` after the next `up` there finds them).
    assert f"results kept in Docker volume {rec['volume']}" in down.stderr, down.stderr
    kept = docker("run", "--rm", "-v", f"{rec['volume']}:/r", "--entrypoint", "ls", IMAGE, "/r")
    assert kept.stdout.split(), "the volume is empty"
    docker("volume", "rm", rec["volume"])


def _results_come_home(state, tmp_path, res: dict) -> None:
    """`job results --download` on nodes that share no disk with this machine: the run's
    Tune experiment comes out of the cluster's volume, through the Job API, with its record
    and every trial's rows."""
    listed = json.loads(run_cli("job", "list", "--json", state_dir=state, check=True).stdout)
    job = next(j for j in listed if "tune_xgboost.py" in j["entrypoint"])  # the first search
    p = run_cli("job", "results", job["submission_id"], "--download", tmp_path / "home",
                state_dir=state, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    (run,) = (tmp_path / "home").iterdir()
    assert json.loads((run / "rayscale-result.json").read_text())["trials"] == res["trials"]
    rows = [len(f.read_text().splitlines()) for f in run.glob("*/result.json")]
    assert len(rows) == res["trials_completed"] and all(rows), rows


def _job_runs_from_the_image_unless_changed(state, tmp_path) -> None:
    """The image holds this job (its digest matches): the job just run went from there, with
    no working_dir and no runtime env. A copy changed in one line is uploaded."""
    from rayscale import job_files, jobs, providers
    from rayscale.state import StateDir

    ep = providers.recorded(StateDir(state)).endpoint()
    assert ep.image_job == ("/opt/rayscale/job", job_files.job_digest(ROOT / "job"))
    j = jobs.Jobs(ep)
    (first,) = j._client.list_jobs()
    assert not first.runtime_env, first.runtime_env
    assert first.entrypoint.startswith("cd /opt/rayscale/job && python tune_xgboost.py ")
    changed = tmp_path / "job"
    shutil.copytree(ROOT / "job", changed, ignore=shutil.ignore_patterns("__pycache__"))
    with open(changed / "space.py", "a") as f:
        f.write("# changed\n")
    job_id = j.submit([str(a) for a in [*TINY, "--num-samples", 2]], job_dir=changed)
    rec = j.result(job_id, j.wait(job_id, timeout=300))
    assert rec["trials_completed"] == 2
    info = j._client.get_job_info(job_id)
    assert info.runtime_env["working_dir"].startswith("gcs://_ray_pkg_")
    assert info.entrypoint.startswith("python tune_xgboost.py ")


def _storage_is_shared_or_refused(state) -> None:
    """On nodes that share no disk: a node-local storage path is refused at the start, in
    one line, and so is object storage the nodes cannot reach. (A search checkpointing to a
    bucket: test_docker_worker_killed_mid_search_loses_nothing.)"""
    from conftest import S3, assert_one_line_error

    unreachable = {**S3.ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    cases = [
        (
            [],
            "/tmp/node-local",
            ["--storage-path /tmp/node-local is not shared", "s3://bucket/path"],
        ),
        (
            [f"--env={k}={v}" for k, v in unreachable.items()],
            "s3://runs/x",
            ["cannot write to --storage-path s3://runs/x", "AWS_ENDPOINT_URL"],
        ),
    ]
    for env, path, needles in cases:
        p = run_cli(
            "job", "submit", *env, "--", *TINY, "--num-samples", 2, "--storage-path", path,
            "--checkpoint-every", 5, "--checkpoint-min-s", 0, state_dir=state, timeout=300,
        )  # fmt: skip
        assert_one_line_error(p, *needles)


def test_missing_image_is_a_clear_error(tmp_path):
    p = run_cli(
        "cluster",
        "up",
        "--provider",
        "docker",
        "--image",
        "rayscale:no-such-tag",
        state_dir=tmp_path / "s",
    )
    from conftest import assert_one_line_error

    assert_one_line_error(p, "rayscale:no-such-tag", "make image")
    assert not (tmp_path / "s" / "cluster.json").exists()


@pytest.mark.drill  # a fault drill: make drills
def test_docker_worker_killed_mid_search_loses_nothing(tmp_path):
    """Worker loss on the docker provider, with the search's storage in an S3 bucket (a local
    S3-compatible server): `docker kill` of a worker mid-search; the lost trial resumes from
    its checkpoint in the bucket and the search completes."""

    from conftest import s3_server

    state = tmp_path / "state"
    _up(state, check=True)
    rec = json.loads((state / "cluster.json").read_text())
    gateway = docker(
        "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", rec["network"]
    ).stdout.strip()
    try:
        with s3_server(gateway) as s3:
            s3.make_bucket("runs")
            env = [f"--env={k}={v}" for k, v in s3.env.items()]
            job_id = run_cli(
                "job",
                "submit",
                "--no-wait",
                *env,
                "--",
                *FAULT_JOB,
                "--storage-path",
                "s3://runs/kill",
                "--name",
                "kill",
                state_dir=state,
                check=True,
            ).stdout.strip()
            wait_for_progress(state, job_id, done=1)
            assert docker("kill", rec["workers"][1]["name"]).returncode == 0
            status, logs = wait_for_end(state, job_id)
            assert status == "SUCCEEDED", logs[-3000:]
            res = _result(logs)
            assert res["trials_completed"] == N and res["trials_errored"] == 0, logs[-3000:]
            assert res["retried_trials"], "the trial on the killed container must be retried"
            assert res["result_path"] == "s3://runs/kill/kill/rayscale-result.json"
            keys = s3.keys("runs", "kill/kill/")  # <storage path>/<run name>/
            assert "kill/kill/rayscale-result.json" in keys and any(
                "/checkpoint_" in k for k in keys
            )
            assert any(k.startswith("kill/kill/experiment_state-") for k in keys), (
                "Tune's experiment state is in the bucket (what `job resume` restores)"
            )
    finally:
        run_cli("cluster", "down", "--delete-results", state_dir=state, timeout=300)
    assert _leftovers(rec["cluster_id"]) == []


def test_ctrl_c_during_docker_cluster_up_leaves_nothing(tmp_path):
    import signal
    import time

    from conftest import RAYSCALE, ROOT

    state = tmp_path / "state"
    env = dict(os.environ, RAYSCALE_STATE_DIR=str(state), RAYSCALE_DOCKER=DOCKER)
    cli = subprocess.Popen(
        [
            RAYSCALE,
            "cluster",
            "up",
            "--provider",
            "docker",
            "--image",
            IMAGE,
            "--workers",
            "2",
            "--memory-per-worker",
            "1",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cid = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the head container exists
        if (state / "cluster.json").exists():
            cid = json.loads((state / "cluster.json").read_text()).get("cluster_id")
            if (
                cid
                and docker("ps", "-q", "--filter", f"label=rayscale.cluster={cid}").stdout.strip()
            ):
                break
        time.sleep(0.2)
    assert cid, "the cluster never started"
    cli.send_signal(signal.SIGINT)
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert _leftovers(cid) == []
    assert not (state / "cluster.json").exists()
    from rayscale.providers.docker import DockerProvider
    from rayscale.state import StateDir

    made = DockerProvider(StateDir(state), image=IMAGE).results_volume()
    assert not docker("volume", "ls", "-q", "--filter", f"name=^{made}$").stdout.strip(), (
        "the empty results volume this failed up made is left"
    )
