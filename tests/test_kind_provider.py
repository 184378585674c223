"""The kind provider's preflight and plan, without Kubernetes (kind cannot run here).

Missing tools and a Docker engine too small are real CLI runs with a restricted PATH or
stand-in executables (fakes, named so); the command plan is checked against the
documented install steps. `make e2e-kind` runs the real thing where kind works.
"""

from __future__ import annotations

import stat

from conftest import ROOT, assert_one_line_error, run_cli

from rayscale.providers.kind import CRDS, KindProvider
from rayscale.state import StateDir


def test_missing_tools_are_named_with_the_no_kubernetes_alternative(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    # RAYSCALE_DOCKER (set by .ci/run) and friends would point at tools anyway: unset them.
    unset = {f"RAYSCALE_{t}": "" for t in ("DOCKER", "KIND", "KUBECTL", "HELM")}
    p = run_cli("cluster", "up", "--provider", "kind", "--workers", 1, state_dir=tmp_path / "s",
                env={"PATH": str(empty), **unset})
    line = assert_one_line_error(p, "docker, kind, kubectl, helm", "not found",
                                 "make cluster-up PROVIDER=local")
    assert "kind.sigs.k8s.io" in line and "helm.sh" in line
    assert not (tmp_path / "s" / "cluster.json").exists(), "nothing recorded, no provider switched to"


def _stand_in(path, body):
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_docker_too_small_for_the_workers_fake_tools(tmp_path):
    b = tmp_path / "bin"
    b.mkdir()
    env = {f"RAYSCALE_{t.upper()}": _stand_in(b / t, "exit 0") for t in ("kind", "kubectl", "helm")}
    env["RAYSCALE_DOCKER"] = _stand_in(b / "docker", "echo '{\"MemTotal\": 4294967296}'")  # 4 GiB
    p = run_cli("cluster", "up", "--provider", "kind", "--workers", 3, state_dir=tmp_path / "s", env=env)
    assert_one_line_error(p, "3 workers need about 9.5 GiB but Docker has 4.0 GiB", "more memory")


def test_the_plan_it_runs(tmp_path):
    k = KindProvider(StateDir(tmp_path), context=None, namespace=None)  # as the CLI passes them
    assert k.options["context"] == "kind-rayscale" and k.options["namespace"] == "default"
    first = k.commands(create=True, build=True)
    names = [" ".join(c[1:4]) for c in first]
    assert names[0].startswith("create cluster --name")
    assert any("apply --server-side" in " ".join(c) and CRDS in c for c in first), "CRDs server-side"
    helm = next(c for c in first if "upgrade" in c)
    assert helm[helm.index("--version") + 1] == "1.7.0" and "--skip-crds" in helm
    assert str(ROOT / "k8s" / "operator-values.yaml") in helm
    assert first[-2][-1] == "IMAGE=rayscale:0.1.0" and first[-1][1:4] == ["load", "docker-image", "rayscale:0.1.0"]
    # A second `up` on a machine that has both the kind cluster and the image: no create, no build.
    again = k.commands(create=False, build=False)
    assert not any("create" in c for c in again) and not any(c[0] == "make" for c in again)
