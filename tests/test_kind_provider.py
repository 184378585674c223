"""The kind provider's preflight and plan, without Kubernetes (kind cannot run here).

Missing tools and a Docker engine too small are real CLI runs with a restricted PATH or
stand-in executables (fakes, named so); the command plan is checked against the
documented install steps. `make e2e-kind` runs the real thing where kind works.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest
from conftest import RAYSCALE, ROOT, assert_one_line_error, run_cli

from rayscale.providers.kind import KindProvider
from rayscale.state import StateDir


def test_missing_tools_are_named_with_the_no_kubernetes_alternative(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    # RAYSCALE_DOCKER (set by .ci/run) and friends would point at tools anyway: unset them.
    unset = {f"RAYSCALE_{t}": "" for t in ("DOCKER", "KIND", "KUBECTL", "HELM")}
    p = run_cli(
        "cluster",
        "up",
        "--provider",
        "kind",
        "--workers",
        1,
        state_dir=tmp_path / "s",
        env={"PATH": str(empty), **unset},
    )
    line = assert_one_line_error(
        p, "docker, kind, kubectl, helm", "not found", "make cluster-up PROVIDER=local"
    )
    assert "kind.sigs.k8s.io" in line and "helm.sh" in line
    assert not (tmp_path / "s" / "cluster.json").exists(), (
        "nothing recorded, no provider switched to"
    )


def _stand_in(path, body):
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _tools(tmp_path, docker_info: str, kind_body: str = "exit 0") -> dict[str, str]:
    b = tmp_path / "bin"
    b.mkdir()
    env = {f"RAYSCALE_{t.upper()}": _stand_in(b / t, "exit 0") for t in ("kubectl", "helm")}
    env["RAYSCALE_KIND"] = _stand_in(b / "kind", kind_body)
    env["RAYSCALE_DOCKER"] = _stand_in(b / "docker", f"echo '{docker_info}'")
    return env


def test_docker_too_small_for_the_workers_fake_tools(tmp_path):
    env = _tools(tmp_path, '{"MemTotal": 4294967296, "NCPU": 16}')  # 4 GiB
    p = run_cli(
        "cluster", "up", "--provider", "kind", "--workers", 3, state_dir=tmp_path / "s", env=env
    )
    assert_one_line_error(p, "3 workers need about 9.5 GiB but Docker has 4.0 GiB", "more memory")


def test_docker_short_of_cpus_for_the_workers_fake_tools(tmp_path):
    """Pods are scheduled on CPU requests: a worker that cannot fit is refused up front."""
    env = _tools(tmp_path, '{"MemTotal": 68719476736, "NCPU": 4}')  # 64 GiB, 4 CPUs
    p = run_cli(
        "cluster", "up", "--provider", "kind", "--workers", 3, state_dir=tmp_path / "s", env=env
    )
    assert_one_line_error(p, "3 workers need about 5.5 CPUs on kind but Docker has 4", "more CPUs")
    assert not (tmp_path / "s" / "cluster.json").exists()


def test_a_failing_kind_get_clusters_stops_up_fake_tools(tmp_path):
    """Never read a failure as "no clusters": up would create, and on failure delete, one
    named like a cluster it could not see."""
    env = _tools(
        tmp_path,
        '{"MemTotal": 68719476736, "NCPU": 16}',
        kind_body='echo "ERROR: failed to list clusters: permission denied" >&2; exit 1',
    )
    p = run_cli(
        "cluster", "up", "--provider", "kind", "--workers", 1, state_dir=tmp_path / "s", env=env
    )
    assert_one_line_error(p, "`kind get clusters` failed: ERROR: failed to list clusters", "docker")
    assert not (tmp_path / "s" / "logs" / "kind-up.log").exists(), "nothing was run"


def test_the_plan_it_runs(tmp_path):
    k = KindProvider(StateDir(tmp_path), context=None, namespace=None)  # as the CLI passes them
    assert k.options.context == "kind-rayscale" and k.options.namespace == "default"
    first = k.commands(create=True, build=True, operator=None, chart_dir="/tmp/c")
    names = [" ".join(c[1:4]) for c in first]
    assert names[0].startswith("create cluster --name")
    # One download, the chart: its crds/ are applied server-side (too large for client-side
    # apply), then the operator installed from the same copy without them.
    pull = next(c for c in first if "pull" in c)
    assert pull[pull.index("--version") + 1] == "1.7.0" and "kuberay/kuberay-operator" in pull
    apply = next(c for c in first if "apply" in c)
    assert "--server-side" in apply and apply[-1] == "/tmp/c/kuberay-operator/crds"
    helm = next(c for c in first if "upgrade" in c)
    assert "/tmp/c/kuberay-operator" in helm and "--skip-crds" in helm
    assert str(ROOT / "k8s" / "operator-values.yaml") in helm
    assert not any("-k" in c for c in first), "no second download of the CRDs"
    assert first[-1][-1] == "IMAGE=rayscale:0.1.0"
    # The image load, and its fallback for Docker's containerd image store (kind issue 3795).
    load, fallback = k.load_commands("/tmp/x/image.tar")
    assert load[1:4] == ["load", "docker-image", "rayscale:0.1.0"]
    assert fallback[0][1:] == ["save", "-o", "/tmp/x/image.tar", "rayscale:0.1.0"]
    assert fallback[1][1:4] == ["load", "image-archive", "/tmp/x/image.tar"]
    # A second `up` where the kind cluster, the operator 1.7.0 and the image are there
    # already: nothing to download, create or build (it works offline).
    assert k.commands(create=False, build=False, operator="1.7.0") == []
    # Another operator version is upgraded, CRDs included (Helm never upgrades crds/).
    older = k.commands(create=False, build=False, operator="1.5.0")
    assert [c[1] for c in older] == ["repo", "pull", "--context", "--kube-context"]
    # A named rayscale cluster is a kind cluster of its own, which its `down` deletes.
    named = KindProvider(StateDir(tmp_path, "gpu-2"), context=None, namespace=None)
    assert named.kind_cluster == "rayscale-gpu-2" and named.options.context == "kind-rayscale-gpu-2"
    made = named.commands(create=True, build=False, operator="1.7.0", chart_dir="/tmp/c")
    assert made[0][1:5] == ["create", "cluster", "--name", "rayscale-gpu-2"]


def test_the_deployed_operator_is_read_from_helm_fake_tools(tmp_path):
    """`helm list -o json` as Helm 3 prints it; a failing or unparsable answer means install."""
    releases = [
        {"name": "kuberay-operator", "namespace": "default", "revision": "1",
         "status": "deployed", "chart": "kuberay-operator-1.7.0", "app_version": "v1.7.0"},
    ]  # fmt: skip
    k = KindProvider(StateDir(tmp_path / "s"), context=None, namespace=None)
    b = tmp_path / "bin"
    b.mkdir()
    for body, want in [
        (f"echo '{json.dumps(releases)}'", "1.7.0"),
        ("echo '[]'", None),
        (f"echo '{json.dumps([{**releases[0], 'status': 'failed'}])}'", None),
        ("echo 'Error: Kubernetes cluster unreachable' >&2; exit 1", None),
    ]:
        helm = _stand_in(b / "helm", body)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RAYSCALE_HELM", helm)
            assert k.operator_version() == want, body


def test_kubectl_command_lines_parse_with_the_real_kubectl(tmp_path):
    """Every kubectl line the kit runs, given to the kubectl installed here with --help:
    an unknown flag or subcommand fails there as it would on a user's machine."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        if os.environ.get("CI"):
            pytest.fail("no kubectl on PATH: .ci/run installs it", pytrace=False)
        pytest.skip("no kubectl on PATH")
    k = KindProvider(StateDir(tmp_path), context=None, namespace=None)
    lines = [c for c in k.commands(True, True, None, "/tmp/c") if c[0].endswith("kubectl")]
    rec = {"context": "kind-rayscale", "namespace": "ml", "name": "rs", "forward_port": 18265}
    lines.append(k._forward_argv(rec))
    assert len(lines) == 2
    for argv in lines:
        p = subprocess.run(
            [kubectl, *argv[1:], "--help"], capture_output=True, text=True, timeout=60
        )
        assert p.returncode == 0, f"{argv}: {p.stderr}"
    # And the check can fail: a flag kubectl lacks is refused.
    bad = subprocess.run(
        [kubectl, "port-forward", "--no-such-flag", "svc/x", "1:1", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0 and "unknown flag" in bad.stderr


def test_an_up_killed_while_kind_makes_the_cluster_leaves_a_record_down_cleans_fake_tools(tmp_path):
    """SIGKILL (no handler runs) while `kind create cluster` runs: the record written
    before kind started names the kind cluster, so `status` says what happened and `down`
    deletes it. kind is a stand-in that makes the cluster, then kills the CLI."""
    fake = tmp_path / "kind"
    fake.mkdir()
    kind = (
        f'case "$1 $2" in\n'
        f'  "get clusters") cat {fake}/clusters 2>/dev/null || true;;\n'
        f'  "create cluster") echo rayscale > {fake}/clusters; kill -KILL $PPID; sleep 5;;\n'
        f'  "delete cluster") rm -f {fake}/clusters; touch {fake}/deleted;;\n'
        "esac"
    )
    env = {
        **os.environ,
        **_tools(tmp_path, '{"MemTotal": 68719476736, "NCPU": 16}', kind_body=kind),
        "RAYSCALE_STATE_DIR": str(tmp_path / "s"),
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
    }

    def cli(*args):
        return subprocess.run(
            [RAYSCALE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    up = cli("cluster", "up", "--provider", "kind", "--workers", "1")
    assert up.returncode == -9, up.stderr
    rec = json.loads((tmp_path / "s" / "cluster.json").read_text())
    assert rec["kind_cluster"] == "rayscale" and rec["created_kind"], rec
    status = cli("cluster", "status")
    assert_one_line_error(status, "kind cluster rayscale is still being made", "cluster down")
    down = cli("cluster", "down")
    assert down.returncode == 0, down.stderr
    assert (fake / "deleted").exists() and not (fake / "clusters").exists()
    assert not (tmp_path / "s" / "cluster.json").exists()
    assert not (tmp_path / "s" / "chart").exists()  # up's download dir, in the state dir
