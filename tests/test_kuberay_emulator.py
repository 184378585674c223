"""The kuberay provider against a Kubernetes + KubeRay emulator whose pods really run
(tests/kube_emulator.py), and the emulator's own fidelity to KubeRay 1.7.

`make test` runs no Kubernetes (the real one of `make k8s-up` is `make e2e-k8s`). The
emulator answers the provider's API calls as the API server does and runs every pod of a
RayCluster as a container of the kit's real image on the real Docker engine, built the
way KubeRay 1.7's pod.go builds it and run the way the kubelet runs it (uid 1000, no
capabilities, hostPath made by root 0755, local-path claims 0777). So what the kubelet
would refuse fails here too. `make e2e-kind` runs the real thing where kind can start.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import secrets
import threading
import time
import types
from pathlib import Path

import pytest
from conftest import (
    CONTEXT,
    FAKE_KUBECTL,
    IMAGE,
    ROOT,
    TINY,
    assert_one_line_error,
    kubeconfig,
    needs_crds,
    needs_docker,
    run_cli,
)
from kube_emulator import CLOUD_CLASSES, _Custom, build_pod, crd_schema, desired_replicas, prune
from kubernetes.client import ApiException

from rayscale import jobs, lifecycle, manifests, procs, providers
from rayscale.errors import UserError
from rayscale.providers import gcs_ft
from rayscale.providers import rayjob as rayjobs
from rayscale.providers.kind import KindProvider
from rayscale.providers.kube_api import CONFLICT_RETRIES, set_workers
from rayscale.providers.kuberay import KubeRayProvider
from rayscale.state import StateDir

pytestmark = needs_crds  # the emulated API server validates against the real CRDs

needs_image = needs_docker()


def provider(tmp_path, emu, **options) -> KubeRayProvider:
    return KubeRayProvider(StateDir(tmp_path / "state"), api=emu.api, namespace="ml", **options)


def _containers(emu) -> list[str]:
    return emu._docker(
        "ps", "-aq", "--filter", f"label=kubeemu={emu.id}", check=False
    ).stdout.split()


# ---- the kind profile, end to end --------------------------------------------------------------


@needs_image
@pytest.mark.k8s_e2e  # make e2e-k8s: its real counterpart runs there
def test_kind_profile_job_on_its_claim_and_down_emulated_kube(tmp_path, emulate, capfd):
    emu = emulate()  # a laptop-sized kind node: 8 CPUs, 32 GiB
    p = provider(tmp_path, emu, name="rs-kind", profile="kind", image=IMAGE)
    lifecycle.up(p, 1, timeout=240)  # as `cluster up`: the image's job digest read by a job
    try:
        rec = p._record()
        # The context is the one resolved at `up`, so switching kubectl's later changes nothing.
        assert rec["context"] == CONTEXT
        kubeconfig(tmp_path / "kubeconfig", current="other")
        assert providers.recorded(p.state).options.context == CONTEXT
        # Results on a claim made in the cluster's namespace, from kind's default class.
        assert ("create_pvc", "ml", "rayscale-results") in emu.calls
        assert emu.claims[("ml", "rayscale-results")]["spec"]["storageClassName"] == "standard"
        group = emu.objects[("ml", "rs-kind")]["spec"]["workerGroupSpecs"][0]
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 1, "pinned at N"
        # KubeRay shares Ray's logs with the autoscaler only through a volume named ray-logs.
        head = emu.pods[("ml", emu.pod_names("ml", "rs-kind", "head")[0])].manifest["spec"]
        mounts = {
            c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            for c in head["containers"]
        }
        assert mounts["ray-head"]["/tmp/ray"] == mounts["autoscaler"]["/tmp/ray"] == "ray-logs"

        # The job with its default storage path (the claim) and checkpoints on, as `make submit`.
        j = jobs.Jobs(p.endpoint())
        job = j.submit(
            [*TINY, "--num-samples", "2", "--scheduler", "fifo", "--checkpoint-every", "5",
             "--checkpoint-min-s", "0"]
        )  # fmt: skip
        assert j.wait(job, 240) == "SUCCEEDED", j.logs(job)[-3000:]
        result = j.result(job)
        assert result["trials_completed"] == 2
        # The pods' image holds this job (the digest `up` read through a one-line job): it ran
        # from there, no upload and no runtime env.
        info = j._client.get_job_info(job)
        assert not info.runtime_env, info.runtime_env
        assert info.entrypoint.startswith("cd /opt/rayscale/job && python tune_xgboost.py ")
        on_node = (
            Path(emu.claims[("ml", "rayscale-results")]["status"]["path"])
            / result["name"]
            / "rayscale-result.json"
        )
        assert on_node.stat().st_uid == 1000, "written by the pods' user"

        p.scale(
            1, timeout=240
        )  # the same size: only the pinning patch (scaling: the conformance suite)
        patch = [c for c in emu.calls if c[0] == "patch"][-1][3]
        g = patch["spec"]["workerGroupSpecs"][0]
        assert g["replicas"] == g["minReplicas"] == g["maxReplicas"] == 1
    except BaseException:
        p.down()  # a failed check leaves no cluster or port-forward behind
        raise
    fwd = p._record()["forward"]
    p.down()
    assert ("delete", "ml", "rs-kind") in emu.calls and p.state.read() is None
    assert not procs.alive(fwd), "the port-forward outlived the cluster"
    assert procs.wait_for(lambda: not _containers(emu), 60), "pods left running"
    assert ("ml", "rayscale-results") in emu.claims, "results are kept"
    assert "results kept in PersistentVolumeClaim rayscale-results" in capfd.readouterr().err


@needs_image
@pytest.mark.k8s_e2e  # make e2e-k8s: its real counterpart runs there
def test_shipped_rayjob_runs_on_its_own_cluster_emulated_kube(tmp_path, emulate):
    """k8s/kind/results-pvc.yaml + k8s/kind/rayjob.yaml as `kubectl apply` would send them:
    KubeRay makes the cluster, its submitter runs the job, the result lands on the claim."""
    import yaml

    emu = emulate()
    emu.core.create_namespaced_persistent_volume_claim(
        "ml", yaml.safe_load((ROOT / "k8s/kind/results-pvc.yaml").read_text())
    )
    job = yaml.safe_load((ROOT / "k8s/kind/rayjob.yaml").read_text())
    emu.custom.create_namespaced_custom_object("ray.io", "v1", "ml", "rayjobs", job)

    def status():
        return emu.custom.get_namespaced_custom_object(
            "ray.io", "v1", "ml", "rayjobs", "rayscale-tune"
        )["status"]

    assert procs.wait_for(
        lambda: status()["jobDeploymentStatus"] in ("Complete", "Failed"), 600, interval=2
    ), status()
    st = status()
    logs = emu.submitter_logs("ml", "rayscale-tune")
    assert st["jobDeploymentStatus"] == "Complete" and st["jobStatus"] == "SUCCEEDED", logs[-3000:]
    (line,) = [x for x in logs.splitlines() if x.startswith("RAYSCALE_RESULT ")]
    result = json.loads(line.split(" ", 1)[1])
    assert result["trials_completed"] == 8 and result["cluster"]["worker_nodes"] == 2
    on_node = (
        Path(emu.claims[("ml", "rayscale-results")]["status"]["path"])
        / result["name"]
        / "rayscale-result.json"
    )
    assert on_node.stat().st_uid == 1000
    emu.custom.delete_namespaced_custom_object("ray.io", "v1", "ml", "rayjobs", "rayscale-tune")
    assert procs.wait_for(lambda: not _containers(emu), 90), "its cluster goes with the RayJob"


# ---- the cloud profile ------------------------------------------------------------------------


# Emulated-only (what a real cluster cannot stage in a test); run with the real side in
# make e2e-k8s, which keeps make test within its time.
@pytest.mark.k8s_e2e
@needs_image
def test_cloud_profile_needs_an_image_and_a_shared_claim_emulated_kube(tmp_path, emulate):
    emu = emulate(classes=CLOUD_CLASSES, default_class="gp3", node_cpus=16, node_memory="64Gi")
    with pytest.raises(UserError, match="placeholder.*pass --image"):
        provider(tmp_path, emu, name="rs-cloud").up(1, timeout=30)
    assert emu.calls == [], "refused before any API call"
    with pytest.raises(
        UserError, match=r"gp3 \(ebs.csi.aws.com\) cannot do ReadWriteMany.*--storage-class"
    ):
        provider(tmp_path, emu, name="rs-cloud", image=IMAGE).up(1, timeout=30)
    assert not emu.claims and not emu.objects
    with pytest.raises(
        UserError, match=r"StorageClass 'nfs' does not exist \(the cluster has: gp3, efs, nfs-csi\)"
    ):
        provider(tmp_path, emu, name="rs-cloud", image=IMAGE, storage_class="nfs").up(1, timeout=30)

    p = provider(tmp_path, emu, name="rs-cloud", image=IMAGE, storage_class="efs")
    p.up(1, timeout=240)
    try:
        claim = emu.claims[("ml", "rayscale-results")]["spec"]
        assert claim["accessModes"] == ["ReadWriteMany"] and claim["storageClassName"] == "efs"
        # The worker's CPUs come from its limits (7), its pods from the cloud profile.
        assert p.status().worker_cpus == 7
    finally:
        p.down()
    # An existing claim that is not ReadWriteMany is refused by name.
    emu.claims[("ml", "mine")] = {
        "metadata": {"name": "mine", "uid": "u"},
        "status": {"phase": "Bound"},
        "spec": {"accessModes": ["ReadWriteOnce"]},
    }
    with pytest.raises(UserError, match="mine is ReadWriteOnce.*ReadWriteMany"):
        provider(tmp_path, emu, name="rs-cloud", image=IMAGE, results_claim="mine").up(
            1, timeout=30
        )


# ---- what goes wrong, named at once ---------------------------------------------------------


@needs_image  # the emulator's cluster network is a Docker network
def test_missing_crds_are_told_apart_from_a_missing_namespace_emulated_kube(tmp_path, emulate):
    """No ray.io API: a plain 404 with no namespace in it (a missing namespace, shown on
    both backends in test_kube_backends.py, names the namespace)."""
    emu = emulate()
    emu.crd_installed = False
    p = provider(tmp_path, emu, name="rs-x", profile="kind")
    with pytest.raises(
        UserError, match="KubeRay CRDs are not installed.*helm install kuberay-operator"
    ):
        p.up(1, timeout=10)
    assert not emu.claims, "the claim this failed up made is gone again"
    assert p.state.read() is None


@needs_image
def test_an_image_no_registry_serves_fails_fast_emulated_kube(tmp_path, emulate):
    emu = emulate()
    p = provider(tmp_path, emu, name="rs-img", profile="kind", image="rayscale:never-built")
    t0 = time.monotonic()
    with pytest.raises(
        UserError,
        match="head pod of rs-img cannot start: container ray-head: ErrImagePull: .*pull access "
        "denied, repository does not exist",
    ):
        p.up(1, timeout=300)
    assert time.monotonic() - t0 < 60, "named at once, not after the timeout"
    assert ("delete", "ml", "rs-img") in emu.calls and p.state.read() is None


# Emulated-only (what a real cluster cannot stage in a test); run with the real side in
# make e2e-k8s, which keeps make test within its time.
@pytest.mark.k8s_e2e
@needs_image
def test_a_registry_that_times_out_a_while_is_waited_for_emulated_kube(tmp_path, emulate):
    """A kubelet retries a pull that failed (a slow registry, a multi-GB image): `up` waits
    through ErrImagePull / ImagePullBackOff that are not the registry's final word."""
    emu = emulate()
    emu.slow_pulls[IMAGE] = 8.0  # every pull times out for 8 s, then the image arrives
    p = provider(tmp_path, emu, name="rs-slow", profile="kind", image=IMAGE)
    p.up(1, timeout=240)
    pods = emu.core.list_namespaced_pod("ml", "ray.io/cluster=rs-slow").items
    assert all(x.status.phase == "Running" for x in pods) and len(pods) == 2
    p.down()


@needs_image
def test_a_head_that_crashes_again_and_again_fails_fast_emulated_kube(tmp_path, emulate):
    """KubeRay deletes a head whose Ray container exited and makes a new one (shouldDeletePod,
    an event each time), so a head that cannot start is never seen Failed for long: `up`
    counts the replaced heads and stops with the container's last lines. The image here
    is a real one without Ray (the kit's base image): `ray: command not found`."""
    emu = emulate()
    p = provider(tmp_path, emu, name="rs-crash", profile="kind", image="rayscale-base:bookworm")
    t0 = time.monotonic()
    with pytest.raises(UserError) as e:
        p.up(1, timeout=300)
    said = e.value.problem
    assert said.startswith("the head pod of rs-crash cannot start: its Ray container exited 127")
    assert "in 2 pods in a row" in said and "ray: command not found" in said, said
    assert time.monotonic() - t0 < 90, "named at once, not after the timeout"
    deleted = [
        ev for ev in emu.core.list_namespaced_event("ml", "involvedObject.name=rs-crash").items
        if ev.reason == "DeletedHeadPod"
    ]  # fmt: skip
    assert len(deleted) >= 2 and "ExitCode:127" in deleted[0].message
    assert ("delete", "ml", "rs-crash") in emu.calls and p.state.read() is None


@needs_image  # the emulator's cluster network is a Docker network
def test_name_clash_is_refused_and_kept_emulated_kube(tmp_path, emulate):
    emu = emulate()
    emu.objects[("ml", "rs-test")] = {
        "metadata": {"name": "rs-test", "namespace": "ml"},
        "spec": {},
    }  # someone else's
    emu.reconcile = lambda: None  # no operator: nothing of theirs to run
    with pytest.raises(UserError, match="already exists"):
        provider(tmp_path, emu, name="rs-test", profile="kind").up(1, timeout=5)
    assert ("ml", "rs-test") in emu.objects, "never delete what this up did not create"


def test_unknown_context_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.setenv("RAYSCALE_KUBECTL", FAKE_KUBECTL)
    p = KubeRayProvider(StateDir(tmp_path / "state"), context="prod", image=IMAGE)
    with pytest.raises(
        UserError, match=rf"no context 'prod' \(it has: {CONTEXT}, other\).*--context"
    ):
        p.up(1)
    assert p.state.read() is None  # refused before anything was created


@pytest.mark.parametrize("gone", ["context deleted", "API server down"])
def test_down_keeps_the_record_of_a_cluster_it_cannot_reach(tmp_path, gone):
    """An API server that does not answer (down for a while, or a context deleted): the
    RayCluster may still run, so `down` fails in one line naming the kubectl command and
    `--forget`, and keeps the record; `down --forget` then clears it."""
    state = tmp_path / "state"
    state.mkdir()
    ctx = "kind-vanished" if gone == "context deleted" else CONTEXT
    (state / "cluster.json").write_text(
        json.dumps(
            {
                "provider": "kuberay",
                "context": ctx,
                "namespace": "ml",
                "name": "rs-gone",
                "owned": True,
                "forward_port": 1,
                "dashboard_url": "http://127.0.0.1:1",
            }
        )
    )
    env = {"KUBECONFIG": str(kubeconfig(tmp_path / "kubeconfig")), "RAYSCALE_KUBECTL": FAKE_KUBECTL}
    p = run_cli("cluster", "down", state_dir=state, env=env, timeout=120)
    assert_one_line_error(p, "unreachable", "delete raycluster rs-gone", "cluster down --forget")
    assert (state / "cluster.json").exists()
    p = run_cli("cluster", "down", "--forget", state_dir=state, env=env, timeout=120)
    assert p.returncode == 0 and not (state / "cluster.json").exists(), p.stderr


# ---- the emulator behaves as the system it stands in for ---------------------------------------


def test_api_prunes_unknown_fields_with_a_warning_and_refuses_bad_types():
    schema = crd_schema("ray.io_rayclusters.yaml")
    doc = manifests.raycluster("rs", 1, manifests.PROFILES["kind"], namespace="ml")
    doc["spec"]["workerGroupSpecs"][0]["replica"] = 3  # a typo the API server drops, not refuses
    dropped: list[str] = []
    pruned = prune(copy.deepcopy(doc), schema, "", dropped)
    assert (
        dropped == [".spec.workerGroupSpecs[0].replica"]
        and "replica" not in pruned["spec"]["workerGroupSpecs"][0]
    )
    api = _Custom(types.SimpleNamespace(schemas={"rayclusters": schema}, warnings=[]))
    assert "replica" not in api._admit(doc)["spec"]["workerGroupSpecs"][0]
    assert api.k.warnings == ['unknown field "spec.workerGroupSpecs[0].replica"']
    doc["spec"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(ApiException) as e:
        api._admit(doc)
    assert e.value.status == 422


def test_pods_are_built_as_kuberay_builds_them():
    """Checked against KubeRay v1.7.0's pod.go: the ray start line, env, volumes, init container."""
    rc = manifests.raycluster("rs", 1, manifests.PROFILES["kind"], namespace="ml")
    rc["metadata"]["namespace"] = "ml"
    head = build_pod(rc, "head", rc["spec"]["headGroupSpec"], "rs-head-abcde")
    worker = build_pod(rc, "worker", rc["spec"]["workerGroupSpecs"][0], "rs-workers-worker-abcde")
    h, w = head["spec"]["containers"][0], worker["spec"]["containers"][0]
    assert h["args"] == [
        "ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}; ray start --head --block "
        "--dashboard-agent-listen-port=52365 --dashboard-host=0.0.0.0 --dashboard-port=8265 "
        "--include-dashboard=true --memory=2147483648 --metrics-export-port=8080 --no-monitor "
        "--num-cpus=0"
    ]
    assert w["args"][0].endswith(
        "ray start --address=rs-head-svc.ml.svc.cluster.local:6379 --block "
        "--dashboard-agent-listen-port=52365 --memory=2147483648 "
        "--metrics-export-port=8080 --num-cpus=1"
    )
    env = {e["name"]: e for e in w["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "rs", "key": "auth_token"}
    assert env["RAY_ADDRESS"]["value"] == "rs-head-svc.ml.svc.cluster.local:6379"
    init = worker["spec"]["initContainers"][0]
    assert init["name"] == "wait-gcs-ready" and "ray health-check" in init["args"][0]
    assert "RAY_AUTH_TOKEN" in {e["name"] for e in init["env"]}, (
        "the init container needs the token too"
    )
    # The kit mounts /dev/shm and /tmp/ray itself, under KubeRay's names: nothing is added;
    # the service-account token is mounted in the autoscaler sidecar alone.
    assert [v["name"] for v in head["spec"]["volumes"]] == [
        "results", "ray-logs", "shared-mem", "kube-api-access"]  # fmt: skip
    token_in = [
        c["name"]
        for c in head["spec"]["containers"]
        if any(m["name"] == "kube-api-access" for m in c.get("volumeMounts") or [])
    ]
    assert token_in == ["autoscaler"] and head["spec"]["automountServiceAccountToken"] is False
    assert (
        head["spec"]["containers"][1]["name"] == "autoscaler"
        and head["spec"]["restartPolicy"] == "Never"
    )


def _api_server_only() -> _Custom:
    """The emulator's API server for RayClusters, its operator idle (no pods are made)."""
    versions = itertools.count(1)
    k = types.SimpleNamespace(
        objects={}, rayjobs={}, warnings=[], calls=[], namespaces={"ml"}, crd_installed=True,
        schemas={"rayclusters": crd_schema("ray.io_rayclusters.yaml")},
        lock=threading.RLock(), reconcile=lambda: None, writes_after_read=[],
        next_version=lambda: str(next(versions)),
    )  # fmt: skip
    return _Custom(k)


# Emulated-only (what a real cluster cannot stage in a test); run with the real side in
# make e2e-k8s, which keeps make test within its time.
@pytest.mark.k8s_e2e
def test_a_resize_racing_another_writer_keeps_both_writes_emulated_kube():
    """The autoscaler writes the same workerGroupSpecs list that `scale` merge-patches whole.
    A write between the kit's read and its patch is not lost: the API server refuses the
    stale patch (409, resourceVersion) and the kit makes it again from the new object."""
    api = _api_server_only()
    doc = manifests.raycluster("rs", 1, manifests.PROFILES["kind"], namespace="ml")
    api.create_namespaced_custom_object("ray.io", "v1", "ml", "rayclusters", doc)

    def autoscaler(custom):  # names a worker to remove, as Ray's autoscaler does
        obj = custom.k.objects[("ml", "rs")]
        groups = copy.deepcopy(obj["spec"]["workerGroupSpecs"])
        groups[0]["scaleStrategy"] = {"workersToDelete": ["rs-workers-worker-abcde"]}
        custom.patch_namespaced_custom_object(
            "ray.io", "v1", "ml", "rayclusters", "rs",
            {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
             "spec": {"workerGroupSpecs": groups}},
        )  # fmt: skip

    api.k.writes_after_read.append(autoscaler)
    assert set_workers(api, "ml", "rs", 2) == 2  # the first patch was refused, the second taken
    group = api.k.objects[("ml", "rs")]["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    assert group["scaleStrategy"]["workersToDelete"] == ["rs-workers-worker-abcde"]
    # A writer that always wins: one line, not an endless loop.
    api.k.writes_after_read.extend([autoscaler] * CONFLICT_RETRIES)
    with pytest.raises(UserError, match="another writer changed it 8 times in a row"):
        set_workers(api, "ml", "rs", 3)
    with pytest.raises(UserError, match="RayCluster gone no longer exists"):
        set_workers(api, "ml", "gone", 1)


# Emulated-only (what a real cluster cannot stage in a test); run with the real side in
# make e2e-k8s, which keeps make test within its time.
@pytest.mark.k8s_e2e
@needs_image
def test_kind_down_keeps_the_results_on_this_machine_emulated_kube(tmp_path, emulate, capfd):
    """`kind delete cluster` removes the node container and the volumes in it. A kind
    cluster that `up` creates has its local-path volumes (the results claim's) mounted from
    a folder on this machine, so `down` keeps them there, and says so. kind is a stand-in
    (tests/fake_kind.py); the emulator's node mounts what the config `up` wrote names."""
    fake = tmp_path / "kind"
    emu = emulate(kind_config=fake / "config.yaml", docker=procs.tool("docker"))
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "helm").write_text("#!/bin/sh\n[ \"$3\" = list ] && echo '[]'\nexit 0\n")
    (bin_ / "docker").write_text(
        '#!/bin/sh\ncase "$1" in info) echo \'{"MemTotal": 68719476736, "NCPU": 16}\';;'
        f" images) echo {IMAGE};; esac\n"
    )
    for f in bin_.iterdir():
        f.chmod(0o755)
    volumes = tmp_path / "cwd" / "results" / "kind-rayscale"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_KIND_DIR", str(fake))
        mp.setenv("RAYSCALE_KIND", str(ROOT / "tests" / "fake_kind.py"))
        mp.setenv("RAYSCALE_HELM", str(bin_ / "helm"))
        mp.setenv("RAYSCALE_DOCKER", str(bin_ / "docker"))
        (tmp_path / "cwd").mkdir()
        mp.chdir(tmp_path / "cwd")
        k = KindProvider(
            StateDir(tmp_path / "state"), api=emu.api, context=CONTEXT, namespace="ml",
            image=IMAGE,
        )  # fmt: skip
        k.up(1, timeout=240)
        rec = k._record()
        assert rec["created_kind"] and rec["volumes_dir"] == str(volumes)
        # The claim's folder, where the pods write, is the machine's folder under kind's
        # local-path directory, named as local-path names it.
        claim = Path(emu.claims[("ml", "rayscale-results")]["status"]["path"])
        assert claim.parent == volumes and claim.name.endswith("_ml_rayscale-results")
        (claim / "rs-run").mkdir()
        (claim / "rs-run" / "rayscale-result.json").write_text("{}")
        k.down()
    assert (fake / "deleted").exists(), "down deleted the kind cluster it created"
    emu.delete_node()  # what that delete does to the node's own filesystem
    assert (claim / "rs-run" / "rayscale-result.json").read_text() == "{}"
    err = capfd.readouterr().err
    assert f"results kept on this machine in {volumes}" in err
    assert "PersistentVolumeClaim" not in err, "the claim went with the kind cluster"


# Emulated-only (what a real cluster cannot stage in a test); run with the real side in
# make e2e-k8s, which keeps make test within its time.
@pytest.mark.k8s_e2e
@needs_image
def test_results_on_a_share_uid_1000_cannot_write_are_refused_at_up_emulated_kube(
    tmp_path, emulate
):
    """An NFS class (csi-driver-nfs: the share's root as the server made it, root 0755, and
    fsGroup skipped) binds and mounts, and every checkpoint then fails with EACCES. `up`
    asks the head whether the pods' user can write it, and refuses, naming the class and
    the fix, with nothing left behind."""
    emu = emulate(classes=CLOUD_CLASSES, default_class="gp3", node_cpus=16, node_memory="64Gi")
    p = provider(tmp_path, emu, name="rs-nfs", image=IMAGE, storage_class="nfs-csi")
    with pytest.raises(UserError) as e:
        p.up(1, timeout=240)
    said = e.value.problem
    assert said.startswith(
        "the results volume (claim rayscale-results, StorageClass nfs-csi) is not writable "
        "by the pods' user: uid 1000"
    ), said
    assert "0 0" in said  # ls -ldn: owned by root
    assert "anonuid=1000" in e.value.fix and "--results-claim" in e.value.fix
    assert ("delete", "ml", "rs-nfs") in emu.calls and p.state.read() is None
    assert procs.wait_for(lambda: not _containers(emu), 60), "pods left running"


def test_rbac_and_missing_namespaces_answer_as_the_api_server_does_emulated_kube():
    """A 403 is one line in the API server's own words; a read in a namespace that does not
    exist finds nothing (the object is not found), only a create names the namespace."""
    api = _api_server_only()
    doc = manifests.raycluster("rs", 1, manifests.PROFILES["kind"], namespace="ml")
    api.create_namespaced_custom_object("ray.io", "v1", "ml", "rayclusters", doc)
    api.k.forbidden = {("patch", "rayclusters")}
    with pytest.raises(UserError) as e:
        set_workers(api, "ml", "rs", 2)
    assert e.value.problem == (
        'cannot resize RayCluster rs: rayclusters.ray.io "rs" is forbidden: User '
        '"system:serviceaccount:ml:rayscale" cannot patch resource "rayclusters" in API group '
        '"ray.io" in the namespace "ml"'
    )
    assert "kubectl auth can-i --list" in e.value.fix
    with pytest.raises(ApiException) as e:
        api.get_namespaced_custom_object("ray.io", "v1", "nowhere", "rayclusters", "rs")
    assert e.value.status == 404 and 'rayclusters.ray.io \\"rs\\" not found' in e.value.body
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object("ray.io", "v1", "nowhere", "rayclusters", doc)
    assert e.value.status == 404 and 'namespaces \\"nowhere\\" not found' in e.value.body


def test_worker_replicas_are_held_as_kuberay_holds_them():
    """GetWorkerGroupDesiredReplicas (utils/util.go): replicas raised to minReplicas, capped
    at maxReplicas, 0 when suspended, times numOfHosts."""
    assert desired_replicas({"replicas": 0, "minReplicas": 2, "maxReplicas": 4}) == 2
    assert desired_replicas({"replicas": 9, "minReplicas": 2, "maxReplicas": 4}) == 4
    assert desired_replicas({"replicas": 3, "minReplicas": 2, "maxReplicas": 4}) == 3
    assert desired_replicas({"minReplicas": 1}) == 1  # no replicas: the minimum
    assert desired_replicas({"replicas": 3, "suspend": True}) == 0
    assert desired_replicas({"replicas": 2, "numOfHosts": 2}) == 4


@needs_image
@pytest.mark.k8s_e2e  # make e2e-k8s: its real counterpart runs there
def test_job_submit_as_a_rayjob_on_the_running_cluster_emulated_kube(tmp_path, emulate):
    """`job submit --rayjob`: a RayJob naming the running RayCluster (clusterSelector), its
    retries the submitter's (KubeRay refuses backoffLimit with a clusterSelector); the
    emulator's operator runs KubeRay's submitter command in the head's image, and the
    record comes from the submitter's log, with no port-forward in the way."""
    emu = emulate()
    p = provider(tmp_path, emu, name="rs-rj", profile="kind", image=IMAGE)
    lifecycle.up(p, 1, timeout=240)
    lines: list[str] = []
    try:
        procs.stop(p._record()["forward"], grace=3)  # the forward is not used
        rec = rayjobs.submit_on(
            p, [*TINY, "--num-samples", "2", "--scheduler", "fifo"], 300, lines.append
        )
        assert rec["trials_completed"] == 2 and rec["rayjob"].startswith("rs-rj-job-")
        spec = emu.rayjobs[("ml", rec["rayjob"])]["spec"]
        assert spec["clusterSelector"] == {"ray.io/cluster": "rs-rj"}
        assert spec["submitterConfig"] == {"backoffLimit": 2} and "backoffLimit" not in spec
        assert manifests.rayjob_rules(emu.rayjobs[("ml", rec["rayjob"])]) == []
        assert any(x.startswith("RAYSCALE_PROGRESS ") for x in lines), "followed as it ran"
        assert ("ml", "rs-rj") in emu.objects, "the cluster stays: the RayJob only used it"
    finally:
        p.down()


@needs_image
@pytest.mark.drill
def test_gcs_ft_head_killed_mid_search_workers_stay_and_resume_finishes_emulated_kube(
    tmp_path, emulate, monkeypatch
):
    """`--gcs-ft redis://...` with a real redis-server: the head's GCS lives in Redis
    (KubeRay's configureRedisFT, as the emulator builds the pods). The head container is
    killed mid-search; the operator makes a new head, which takes the cluster back from
    Redis; the worker pod stays (it waits up to 600 s for the GCS); the Job API comes back
    through the forward (the supervisor re-attaches); `job resume` finishes the search
    with every trial that had finished kept."""
    import shutil
    import subprocess

    exe = shutil.which("redis-server")
    if not exe:
        if os.environ.get("CI"):
            pytest.fail("no redis-server: .ci/run installs it", pytrace=False)
        pytest.skip("no redis-server (apt-get install redis-server)")
    emu = emulate()
    gateway = emu._docker(
        "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", emu.network
    ).stdout.strip()
    port, password = procs.free_ports(1)[0], secrets.token_hex(8)
    redis = subprocess.Popen(
        [exe, "--port", str(port), "--bind", gateway, "--requirepass", password,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    monkeypatch.setenv("RAYSCALE_REDIS_PASSWORD", password)
    p = provider(
        tmp_path, emu, name="rs-ft", profile="kind", image=IMAGE,
        gcs_ft=f"redis://{gateway}:{port}",
    )  # fmt: skip
    try:
        lifecycle.up(p, 1, timeout=240)
        spec = emu.objects[("ml", "rs-ft")]["spec"]["gcsFaultToleranceOptions"]
        assert spec == {
            "redisAddress": f"{gateway}:{port}",
            "redisPassword": {
                "valueFrom": {"secretKeyRef": {"name": "rs-ft-redis", "key": "password"}}
            },
        }
        assert password not in json.dumps(emu.objects[("ml", "rs-ft")]), "only in the Secret"
        _kill_head_mid_search_and_resume(emu, p, "rs-ft")
    finally:
        p.down()
        redis.terminate()
        redis.wait(10)
    assert ("delete_secret", "ml", "rs-ft-redis") in emu.calls


@needs_image
def test_gcs_ft_redis_whose_image_cannot_be_pulled_fails_in_one_line_and_leaves_nothing_emulated_kube(
    tmp_path, emulate
):
    """`--gcs-ft redis` deploys a Redis (Secret, NetworkPolicy, Service, Deployment
    `<cluster>-redis`) before the RayCluster, and waits for it: an image no registry serves fails at once,
    naming the Redis and the kubelet's words, and `up` leaves none of it behind."""
    emu = emulate()
    p = provider(tmp_path, emu, name="rs-rx", profile="kind", image=IMAGE, gcs_ft="redis",
                 redis_image="example.invalid/redis:none")  # fmt: skip
    with pytest.raises(UserError) as e:
        lifecycle.up(p, 1, timeout=120)
    msg = str(e.value)
    assert "the Redis for GCS fault tolerance (rs-rx-redis) cannot start" in msg, msg
    assert "ErrImagePull" in msg and "--redis-image" in msg, msg
    assert ("ml", "rs-rx") not in emu.objects, "no RayCluster before its Redis is Ready"
    assert not emu.deployments and not emu.services and ("ml", "rs-rx-redis") not in emu.secrets
    assert not emu.network_policies
    calls = [c[0] for c in emu.calls]
    assert calls.index("create_network_policy") < calls.index("create_deployment"), (
        "the Redis never runs before its NetworkPolicy"
    )
    assert procs.wait_for(lambda: not _containers(emu), 60), _containers(emu)
    assert p.state.read() is None


def test_a_redis_of_yours_takes_its_password_from_the_environment_or_a_file(tmp_path, monkeypatch):
    """rediss:// (TLS) is passed to KubeRay as given; the password never shows in a repr."""
    monkeypatch.setenv("RAYSCALE_REDIS_PASSWORD", "from-env")
    r = gcs_ft.parse("rediss://my-redis.ml:6380")
    assert r.address == "rediss://my-redis.ml:6380" and r.password == "from-env"
    assert "from-env" not in repr(r)
    assert gcs_ft.options(r, "c")["redisAddress"] == "rediss://my-redis.ml:6380"
    (tmp_path / "pass").write_text("from-file\n")
    monkeypatch.setenv("RAYSCALE_REDIS_PASSWORD_FILE", str(tmp_path / "pass"))
    assert gcs_ft.parse("redis://my-redis:6379").password == "from-file"
    monkeypatch.setenv("RAYSCALE_REDIS_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="cannot be read"):
        gcs_ft.parse("redis://my-redis:6379")


def test_gcs_ft_flags_refused_in_one_line(tmp_path):
    """A --gcs-ft that is neither `redis` nor redis://HOST:PORT, and a --redis-image
    without the Redis it is for, are refused before anything is made."""
    up = ("cluster", "up", "--provider", "kuberay", "--image", IMAGE)
    state = tmp_path / "state"
    out = run_cli(*up, "--gcs-ft", "rediss://x", state_dir=state)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "neither redis nor redis[s]://HOST:PORT" in out.stderr, out.stderr
    # A password on the command line is refused, and never echoed.
    out = run_cli(*up, "--gcs-ft", "redis://:hunter2@my-redis:6379", state_dir=state)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "carries a password" in out.stderr and "RAYSCALE_REDIS_PASSWORD" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout
    out = run_cli(*up, "--redis-image", "redis:7.4.6", state_dir=state)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "--redis-image is for the Redis that `--gcs-ft redis` deploys" in out.stderr
    out = run_cli("cluster", "up", "--provider", "docker", "--gcs-ft", "redis", state_dir=state)
    assert out.returncode != 0 and "--gcs-ft does not apply to the docker provider" in out.stderr
    assert StateDir(state).read() is None, "nothing recorded"


REDIS_IMAGE = os.environ.get("RAYSCALE_REDIS_IMAGE", "rayscale-redis:bookworm")


@needs_image
@pytest.mark.drill
def test_gcs_ft_kit_redis_head_killed_resume_finishes_and_down_waits_for_kuberay_cleanup_emulated_kube(
    tmp_path, emulate
):
    """`--gcs-ft redis`: the kit deploys the Redis, with a random password in a Secret.
    The head's GCS is kept there (its keys, under the cluster's uid); the head container
    is killed mid-search, a new head takes the cluster back, the worker stays and `job
    resume` finishes the search. At `down`, KubeRay's finalizer holds the RayCluster while
    its cleanup Job (the head's image, the Secret's password) deletes those keys; the kit
    deletes the Redis and the Secret only after the RayCluster is gone."""
    emu = emulate()
    if emu._docker("image", "inspect", REDIS_IMAGE, check=False).returncode != 0:
        pytest.skip(f"no image {REDIS_IMAGE} (make image-redis)")
    p = provider(tmp_path, emu, name="rs-kr", profile="kind", image=IMAGE, gcs_ft="redis",
                 redis_image=REDIS_IMAGE)  # fmt: skip
    try:
        lifecycle.up(p, 1, timeout=240)
        rc = emu.objects[("ml", "rs-kr")]
        assert rc["spec"]["gcsFaultToleranceOptions"] == {
            "redisAddress": "rs-kr-redis:6379",
            "redisPassword": {
                "valueFrom": {"secretKeyRef": {"name": "rs-kr-redis", "key": "password"}}
            },
        }
        assert rc["metadata"]["finalizers"] == ["ray.io/gcs-ft-redis-cleanup-finalizer"]
        (redis_pod,) = [k[1] for k, v in emu.pods.items() if v.node_type == "deployment"]
        password = emu.exec(redis_pod, "ml", "sh", "-c", "cat /tmp/redis.conf").stdout.split()[-1]
        assert password not in json.dumps(emu.deployments[("ml", "rs-kr-redis")])

        def keys() -> list[str]:
            out = emu.exec(redis_pod, "ml", "redis-cli", "--no-auth-warning", "-a", password,
                           "--scan")  # fmt: skip
            return [k for k in out.stdout.split() if rc["metadata"]["uid"] in k]

        assert keys(), "the head's GCS keeps its tables in the Redis, under the cluster's uid"
        _kill_head_mid_search_and_resume(emu, p, "rs-kr")
    finally:
        p.down()
    assert emu.finished_cleanups == [("ml", "rs-kr", "Complete")], emu.cleanup_logs
    calls = [c[0] for c in emu.calls]
    assert calls.index("delete_deployment") > calls.index("delete")
    assert ("delete_secret", "ml", "rs-kr-redis") in emu.calls
    assert not emu.deployments and not emu.services and not emu.objects
    assert not emu.network_policies
    assert procs.wait_for(lambda: not _containers(emu), 60), _containers(emu)


def _kill_head_mid_search_and_resume(emu, p, cluster: str) -> None:
    """A search running; its head container killed. A new head, the same worker, Ray sees
    it alive again through the forward, and `job resume` finishes all 6 trials."""
    (head,) = emu.pod_names("ml", cluster, "head")
    (worker,) = emu.pod_names("ml", cluster, "worker")
    j = jobs.Jobs(p.endpoint())
    args = [*TINY, "--num-samples", "6", "--max-rounds", "2000", "--scheduler", "fifo",
            "--checkpoint-every", "50", "--checkpoint-min-s", "0", "--name", "ft"]  # fmt: skip
    job = j.submit(args)
    assert procs.wait_for(lambda: "RAYSCALE_PROGRESS" in j.logs(job), 180, interval=1), j.logs(job)[
        -2000:
    ]
    emu._docker("kill", emu.pods[("ml", head)].containers["ray-head"])
    assert procs.wait_for(
        lambda: emu.pod_names("ml", cluster, "head") not in ([], [head]), 120, interval=1
    )
    assert procs.wait_for(lambda: _alive_workers(p) == 1, 300, interval=3)
    assert emu.pod_names("ml", cluster, "worker") == [worker], "the worker stayed"
    j = jobs.Jobs(p.endpoint())
    again = j.resume("ft", args[:-2])
    assert j.wait(again, 400) == "SUCCEEDED", j.logs(again)[-3000:]
    assert j.result(again)["trials_completed"] == 6


def _alive_workers(p) -> int | None:
    try:
        return p.status().alive_workers
    except Exception:
        return None
