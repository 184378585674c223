"""The provider contract (rayscale/providers/base.py), one suite every provider passes.

It doubles as the spec for a new provider: add a Harness below (how to make the provider
on a fresh state dir, what of a cluster exists outside rayscale, how to make a cluster
vanish behind rayscale's back) and the suite must pass unchanged. Each provider runs one
scenario through the Provider API itself, in order; the assertion that fails names the
step. Real parts throughout: local processes, Docker containers, Ray's fake multi-node
autoscaler (ray-up: the head here, worker raylets launched and removed by Ray's
autoscaler), and, for kuberay, the Kubernetes emulator whose pods are containers of
the kit's image (`_emulated_kube` in the id says so; `make e2e-k8s` runs the kuberay
provider on a real Kubernetes built here). kind is kuberay plus its setup commands, which cannot run
here (tests/test_kind_provider.py checks those).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    IMAGE,
    ROOT,
    assert_all_gone,
    docker,
    kill_all,
    needs_crds,
    needs_docker,
    tree_pids,
)

from rayscale import job_files, lifecycle, procs
from rayscale.endpoint import IMAGE_JOB
from rayscale.errors import UserError
from rayscale.providers import provider_class
from rayscale.providers.base import NODE_STATES, NodeShape, Provider
from rayscale.state import StateDir

pytestmark = pytest.mark.cluster
UP_TIMEOUT = 300.0


@dataclass
class Harness:
    make: Callable[[Path], Provider]  # the provider on a fresh (or the same) state dir
    exists: Callable[[Provider], Any]  # what of the recorded cluster exists outside rayscale
    gone: Callable[[Any], None]  # asserts none of that is left
    vanish: Callable[[Provider], None]  # the cluster dies (a crash, a deletion by hand)
    # what else holds for this provider at a size (e.g. ray-up's config pins it)
    sized: Callable[[Provider, int], None] = lambda p, workers: None
    # its nodes run the kit's image, whose copy of the job a matching job dir runs from
    image: bool = False
    # whether the results storage the provider made exists (None: it makes none)
    results: Callable[[Provider], bool] | None = None


# ---- local: processes on this machine --------------------------------------------------------


def _local_pids(p: Provider) -> tuple[set[int], str]:
    rec = p._record()
    return tree_pids([rec["head"]["proc"], *(w["proc"] for w in rec["workers"])]), rec["temp_root"]


def _local(tmp_path, request) -> Harness:
    return Harness(
        make=lambda state: provider_class("local")(StateDir(state), NodeShape.sized(1, 1.0)),
        exists=_local_pids,
        gone=lambda found: assert_all_gone(*found),
        vanish=lambda p: kill_all(_local_pids(p)[0]),
    )


# ---- docker: containers of the kit's image ---------------------------------------------------


def _docker_objects(cid: str) -> list[str]:
    out = []
    for what in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
        out += docker(*what, "--filter", f"label=rayscale.cluster={cid}").stdout.split()
    return out


def _docker_gone(cid: str) -> None:
    assert _docker_objects(cid) == [], "containers, networks or volumes left behind"


def _docker_vanish(p: Provider) -> None:
    cid = p._record()["cluster_id"]
    ids = docker("ps", "-aq", "--filter", f"label=rayscale.cluster={cid}").stdout.split()
    docker("rm", "-f", *ids)  # its network and volume stay: down must remove them


def _docker(tmp_path, request) -> Harness:
    return Harness(
        make=lambda state: provider_class("docker")(
            StateDir(state), NodeShape.sized(1, 1.0), image=IMAGE
        ),
        exists=lambda p: p._record()["cluster_id"],
        gone=_docker_gone,
        vanish=_docker_vanish,
        image=True,
        results=lambda p: bool(
            docker("volume", "ls", "-q", "--filter", f"name=^{p.results_volume()}$").stdout.strip()
        ),
    )


# ---- ray-up: Ray's cluster launcher, its fake multi-node provider ----------------------------


def _ray_up_pids(p: Provider) -> tuple[set[int], str]:
    rec = p._record()
    return tree_pids([rec["head"]]), rec["temp_root"]  # the autoscaler's nodes are its children


def _ray_up_pinned(p: Provider, workers: int) -> None:
    """The rendered config, not the user's file, holds the size: min = max = N, so the
    autoscaler neither adds nor (idle) removes workers while a study measures N."""
    assert "max_workers: 4" in (ROOT / "cluster" / "local-autoscale.yaml").read_text()
    rendered = yaml.safe_load(Path(p._record()["config"]).read_text())
    (node,) = [t for name, t in rendered["available_node_types"].items() if t.get("max_workers")]
    assert node["min_workers"] == node["max_workers"] == workers


def _ray_up(tmp_path, request) -> Harness:
    config = ROOT / "cluster" / "local-autoscale.yaml"
    return Harness(
        make=lambda state: provider_class("ray-up")(StateDir(state), config=str(config)),
        exists=_ray_up_pids,
        gone=lambda found: assert_all_gone(*found),
        vanish=lambda p: kill_all(_ray_up_pids(p)[0]),
        sized=_ray_up_pinned,
    )


# ---- kuberay: the Kubernetes emulator, pods as containers of the kit's image -----------------


def _kuberay(tmp_path, request) -> Harness:
    emu = request.getfixturevalue("emulate")()
    custom = emu.api[0]

    def pods(name: str) -> list[str]:
        return [n for n in emu.pod_names("ml", name) if not emu.pods[("ml", n)].deleting]

    def exists(p: Provider) -> tuple[str, dict]:
        rec = p._record()
        return rec["name"], rec.get("forward")

    def gone(found: tuple[str, dict]) -> None:
        name, fwd = found
        assert ("ml", name) not in emu.objects, "the RayCluster was not deleted"
        assert procs.wait_for(lambda: not pods(name), 60), "pods left running"
        assert not fwd or not procs.alive(fwd), "the port-forward outlived the cluster"

    def vanish(p: Provider) -> None:  # `kubectl delete raycluster` by someone else
        rec = p._record()
        custom.delete_namespaced_custom_object("ray.io", "v1", "ml", "rayclusters", rec["name"])

    return Harness(
        make=lambda state: provider_class("kuberay")(
            StateDir(state), api=emu.api, namespace="ml", profile="kind", image=IMAGE
        ),
        exists=exists,
        gone=gone,
        vanish=vanish,
        image=True,
    )


HARNESSES = {
    "local": _local,
    "docker": _docker,
    "ray-up": _ray_up,
    "kuberay_emulated_kube": _kuberay,
}
# kuberay's contract runs on a real Kubernetes in make e2e-k8s; its emulated run there too
_NEEDS = {
    "docker": [needs_docker()],
    "kuberay_emulated_kube": [needs_docker(), needs_crds, pytest.mark.k8s_e2e],
}


def _alive(p: Provider) -> set[str]:
    return {n.node_id for n in p.status().nodes if n.state == "alive"}


@pytest.mark.parametrize(
    "which", [pytest.param(name, marks=_NEEDS.get(name, [])) for name in HARNESSES]
)
def test_provider_keeps_the_contract(which, tmp_path, request):
    h = HARNESSES[which](tmp_path, request)
    state = tmp_path / "state"
    p = h.make(state)
    try:
        # up: one head that runs no trials, the workers asked for, states from the closed set
        lifecycle.up(p, 1, timeout=UP_TIMEOUT)
        assert p.is_running()
        st = p.status()
        heads = [n for n in st.nodes if n.role == "head"]
        assert len(heads) == 1 and heads[0].cpus == 0 and heads[0].state == "alive"
        assert st.alive_workers == 1 and {n.state for n in st.nodes} <= set(NODE_STATES)
        h.sized(p, 1)
        ep = p.endpoint()
        assert ep.url.startswith("http://127.0.0.1:") and ep.token, "loopback, token set"
        # Where the nodes run the kit's image, its job's digest was read at `up` (docker:
        # exec; kuberay, ray-up: a one-line job, lifecycle.up), so a matching job dir is not
        # uploaded.
        # ray-up's fake nodes are processes here: their image holds no job.
        held = (IMAGE_JOB, job_files.job_digest(ROOT / "job")) if h.image else None
        assert ep.image_job == held, ep.image_job

        # up on a live record: refused, and the cluster is untouched
        with pytest.raises(UserError, match="already runs"):
            h.make(state).up(1, timeout=UP_TIMEOUT)
        before = _alive(p)

        # scale to the same size: a no-op, no node replaced
        p.scale(1, timeout=UP_TIMEOUT)
        assert _alive(p) == before
        # scale up and down
        p.scale(2, timeout=UP_TIMEOUT)
        assert p.status().alive_workers == 2
        h.sized(p, 2)
        p.scale(1, timeout=UP_TIMEOUT)
        assert p.status().alive_workers == 1 and heads[0].node_id in _alive(p)
        h.sized(p, 1)

        # down stops exactly what up started, and keeps the results; twice is a no-op
        found = h.exists(p)
        p.down()
        assert p.state.read() is None and not p.is_running()
        assert not p.state.token_file.exists(), "the token outlived its cluster"
        h.gone(found)
        assert h.results is None or h.results(p), "down deleted the results"
        p.down()
        assert p.state.read() is None

        # a cluster that vanished behind rayscale's back: down clears the record, and
        # --delete-results what the results were kept in
        p = h.make(state)
        p.up(1, timeout=UP_TIMEOUT)
        found = h.exists(p)
        h.vanish(p)
        assert procs.wait_for(lambda: not p.is_running(), 60), "is_running after it vanished"
        p.down(delete_results=True)
        assert p.state.read() is None
        h.gone(found)
        assert h.results is None or not h.results(p), "--delete-results kept the results"
    finally:
        p.down(delete_results=True)
