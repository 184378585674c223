"""make e2e-k8s: the kit's kuberay provider on a real one-node Kubernetes (make k8s-up) with
the real KubeRay operator, through the CLI as a user with an existing cluster runs it.
Each step's outcome and wall time, the versions the API reports, and the plan made from a
local-provider study against what Kubernetes measured: results/k8s-real/e2e.json.

python scripts/k8s/e2e.py [--out results/k8s-real] [--keep-cluster]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "scripts" / "k8s"
VENV = ROOT / ".venv" / "bin"
# A search whose trials take seconds, so the scaling points measure trials, not start-up.
JOB = ["--data", "synthetic:rows=40000,features=20,noise=1.0,seed=0", "--num-samples", "8",
       "--max-rounds", "200", "--scheduler", "fifo"]  # fmt: skip
IMAGES = ["rayscale:0.1.0", "rayscale-redis:bookworm"]


def sh(
    *argv: str,
    env: dict | None = None,
    timeout: float = 1800,
    check: bool = True,
    input: str | None = None,
) -> str:
    p = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT, check=False,
        input=input,
    )  # fmt: skip
    if check and p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-6:]
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {p.returncode}: " + " | ".join(tail))
    return p.stdout


def k8s_env() -> tuple[dict, dict]:
    """(the environment a user of this cluster has, common.sh's settings)"""
    out = sh("bash", "-c", f". {K8S}/common.sh && echo $out && echo $RUN && echo $VOLUMES")
    o, run, volumes = out.split()
    env = dict(
        os.environ, KUBECONFIG=f"{run}/kubeconfig", PATH=f"{o}/bin:{VENV}:{os.environ['PATH']}"
    )
    return env, {"out": o, "bin": f"{o}/bin", "run": run, "volumes": volumes}


class Run:
    def __init__(self, out: Path, label: str = "e2e-k8s"):
        self.out, self.label = out, label
        self.doc: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": []}

    def step(self, name: str, fn, *, needed: bool = False):
        """Run one step; record ok / error and its wall time. A `needed` step's failure
        ends the run (what follows cannot run without it)."""
        t0 = time.perf_counter()
        print(f"{self.label}: {name} ...", flush=True)
        rec: dict = {"step": name}
        try:
            detail = fn()
            rec.update(ok=True, detail=detail)
        except Exception as e:  # recorded, then the next step
            rec.update(ok=False, error=str(e)[-1500:])
        rec["wall_s"] = round(time.perf_counter() - t0, 1)
        self.doc["steps"].append(rec)
        print(f"{self.label}: {name}: {'ok' if rec['ok'] else 'FAILED: ' + rec['error']} "
              f"({rec['wall_s']} s)", flush=True)  # fmt: skip
        self.save()
        if needed and not rec["ok"]:
            raise SystemExit(1)
        return rec.get("detail")

    def save(self):
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "e2e.json").write_text(json.dumps(self.doc, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/k8s-real")
    ap.add_argument("--keep-cluster", action="store_true", help="leave the Kubernetes up")
    ap.add_argument("--render-docs", action="store_true", help="only re-render the docs' table")
    a = ap.parse_args()
    out = ROOT / a.out
    if a.render_docs:
        return render_docs(json.loads((out / "e2e.json").read_text()))
    run = Run(out)
    # the clusters' records and tokens: never under results/
    tmp = Path(tempfile.mkdtemp(prefix="rayscale-e2e-k8s-"))
    state, ft_state = tmp / "state", tmp / "state-ft"
    env, k = k8s_env()
    rs = [str(VENV / "rayscale")]
    up = [*rs, "cluster", "up", "--provider", "kuberay", "--context", "rayscale-k8s",
          "--profile", "small", "--storage-class", "rayscale-local", "--workers", "1"]  # fmt: skip

    def kc(*args: str, **kw) -> str:
        return sh(f"{k['bin']}/kubectl", *args, env=env, **kw)

    # The plan's input, measured first and alone: the same search on the local provider.
    local = out / "local-study"
    run.step("local study: scaling --provider local --workers 1,2 (the plan's input)", lambda: (
        sh(*rs, "scaling", "--provider", "local", "--workers", "1,2", "--repeats", "3",
           "--baselines", "none", "--state-dir", str(tmp / "state-local"), "--out", str(local),
           "--", *JOB, env=env), str(local / "study.json"))[1])  # fmt: skip

    def k8s_up():
        log = sh("make", "-s", "k8s-up", env=env, timeout=5400)
        return log.strip().splitlines()[-2:]

    run.step("make k8s-up", k8s_up, needed=True)
    try:
        _on_cluster(run, env, k, kc, rs, up, state, ft_state, local, out)
    finally:
        for s in (state, ft_state):  # whatever a failed step left
            if (s / "cluster.json").exists():
                sh(*rs, "cluster", "down", "--state-dir", str(s), env=env, check=False)
        if not a.keep_cluster:
            run.step("make k8s-down (nothing of the cluster's left: processes, mounts, links, "
                     "iptables)", lambda: sh("make", "-s", "k8s-down", env=env).strip()
                     .splitlines()[-1])  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    failed = [s["step"] for s in run.doc["steps"] if not s["ok"]]
    run.doc["passed"] = not failed
    run.save()
    render_docs(run.doc)
    print(f"e2e-k8s: {len(run.doc['steps']) - len(failed)} passed, {len(failed)} failed "
          f"-> {out / 'e2e.json'}")  # fmt: skip
    return 1 if failed else 0


def pinned(versions_env: str, name: str) -> str:
    return next(
        x.split("=")[1].split()[0] for x in versions_env.splitlines() if x.startswith(name + "=")
    )


def kind_provider(env: dict, state: Path):
    """The kit's kind provider, finding this cluster's helm, kind and kubectl on PATH."""
    from rayscale.providers.kind import KindProvider
    from rayscale.state import StateDir

    os.environ.update(PATH=env["PATH"], KUBECONFIG=env["KUBECONFIG"])
    return KindProvider(StateDir(state), context="rayscale-k8s", volumes_dir=str(state / "volumes"))


def chart_version(env: dict) -> str | None:
    with tempfile.TemporaryDirectory() as d:
        return kind_provider(env, Path(d)).operator_version()


# Where kind stops on this machine, as its own error says it; any other failure is news.
KIND_WALLS = ("unable to apply caps: operation not permitted", "failed to pull image",
              "no such host")  # fmt: skip


def kind_and_helm(env: dict, k: dict) -> dict:
    """The kind provider's own command lines, as `cluster up --provider kind` runs them, on
    the helm and kind built here: Helm's release list read back, KubeRay's chart upgraded
    in place with the kit's values, and `kind create cluster` with the kit's config up to
    where this machine stops it. What the chart repository would serve (no network here) is
    the module's chart, with shared/'s v1.7.0 CRDs as the 1.7.0 chart holds them."""
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="rayscale-e2e-kind-") as d:
        p = kind_provider(env, Path(d))
        out["helm list: deployed chart"] = before = p.operator_version()
        if not before:
            raise RuntimeError(
                "helm list shows no deployed kuberay-operator (make k8s-up installs it)"
            )
        chart_dir = Path(d) / "chart"
        add, pull, apply, install = p.commands(create=False, build=False, chart_dir=str(chart_dir))
        r = subprocess.run(add, capture_output=True, text=True, timeout=120, check=False)
        out["helm repo add (the chart repository)"] = (
            "ok" if r.returncode == 0 else "unreachable: " + r.stderr.strip().splitlines()[-1][:200]
        )
        if r.returncode != 0 or subprocess.run(pull, capture_output=True, timeout=300).returncode:
            chart = chart_dir / "kuberay-operator"
            shutil.copytree(f"{k['out']}/chart/kuberay-operator", chart)
            shutil.rmtree(chart / "crds")
            shutil.copytree(ROOT.parent / "shared" / "kuberay-crds", chart / "crds",
                            ignore=shutil.ignore_patterns("*.txt"))  # fmt: skip
        for argv in (apply, install):
            sh(*argv, env=env, timeout=600)
        releases = json.loads(
            sh(install[0], "--kube-context", "rayscale-k8s", "list", "-o", "json", env=env)
        )
        out["helm upgrade --install: revision"] = next(int(x["revision"]) for x in releases
                                                        if x["name"] == "kuberay-operator")  # fmt: skip
        if p.operator_version() != before or out["helm upgrade --install: revision"] < 2:
            raise RuntimeError(f"after the upgrade: {releases}")
        out["kind get clusters"] = p.existing_clusters()
        networks = sh("docker", "network", "ls", "--format", "{{.Name}}").split()
        create = p.commands(create=True, build=False, operator="1.7.0", config=p.write_config())[0]
        try:
            # kind's own node image first; then a local image that runs as root, as a node
            # image does (systemd), to get past the pull to where kind starts its node
            for argv in (create, [*create, "--image", "rayscale-base:bookworm"]):
                r = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
                err = next((ln for ln in (r.stdout + r.stderr).splitlines()
                            if any(w in ln for w in KIND_WALLS)), None)  # fmt: skip
                if r.returncode == 0 or err is None:
                    raise RuntimeError(
                        f"kind create: exit {r.returncode}: {(r.stderr or r.stdout)[-800:]}"
                    )
                out[" ".join(argv[1:3] + argv[9:])] = "blocked: " + err.strip()[-300:]
        finally:
            p._delete_kind(p.kind_cluster, Path(d) / "kind.log")
            if "kind" not in networks:  # kind makes it on a first create and never deletes it
                sh("docker", "network", "rm", "kind", check=False)
        left = sh(
            "docker", "ps", "-a", "--filter", f"label=io.x-k8s.kind.cluster={p.kind_cluster}", "-q"
        )
        if left.strip() or p.kind_cluster in p.existing_clusters():
            raise RuntimeError(f"kind delete cluster left {left.split()}")
    return out


def _on_cluster(run, env, k, kc, rs, up, state, ft_state, local, out):
    def versions():
        v = json.loads(kc("version", "-o", "json"))
        node = json.loads(kc("get", "node", "rayscale-k8s", "-o", "json"))["status"]["nodeInfo"]
        build = sh("bash", "-c", f". {K8S}/common.sh && cat $out/versions.env")
        run.doc["versions"] = {
            "server": v["serverVersion"]["gitVersion"],
            "kubelet": node["kubeletVersion"],
            "kube_proxy": sh(f"{k['bin']}/kube-proxy", "--version").split()[-1],
            "container_runtime": node["containerRuntimeVersion"],
            "runc": sh(f"{k['bin']}/runc", "--version").splitlines()[0],
            "kernel": node["kernelVersion"],
            "operator": f"kuberay-operator chart {chart_version(env)} (helm list), ray-operator "
            + pinned(build, "KUBERAY_VERSION"),
            "crds": "KubeRay v1.7.0 (shared/kuberay-crds)",
            "helm": sh(f"{k['bin']}/helm", "version", "--short").strip(),
            "kind": sh(f"{k['bin']}/kind", "version").split()[1],
        }  # fmt: skip
        return run.doc["versions"]

    run.step("versions, as the API reports them", versions)
    run.step("the kind provider's helm, kubectl and kind lines, on the helm and kind built here",
             lambda: kind_and_helm(env, k))  # fmt: skip

    def load_images():
        ctr = [
            f"{k['bin']}/ctr",
            "--address",
            f"{k['run']}/containerd/containerd.sock",
            "-n",
            "k8s.io",
        ]
        for img in IMAGES:
            save = subprocess.Popen(["docker", "save", img], stdout=subprocess.PIPE)
            subprocess.run([*ctr, "images", "import", "--local", "-"], stdin=save.stdout,
                           check=True, capture_output=True)  # fmt: skip
            if save.wait() != 0:
                raise RuntimeError(f"docker save {img} failed (make image / make image-redis)")
        return IMAGES

    run.step("the kit's and Redis's images loaded into containerd (no registry here)",
             load_images, needed=True)  # fmt: skip
    run.step("cluster up --provider kuberay --profile small --workers 1", lambda: sh(
        *up, "--state-dir", str(state), env=env).strip().splitlines()[-1], needed=True)  # fmt: skip

    def job_with_checkpoints():
        sh(*rs, "job", "submit", "--state-dir", str(state), "--save", str(out / "job.json"),
           "--", *JOB, "--checkpoint-every", "50", "--checkpoint-min-s", "0", env=env)  # fmt: skip
        rec = json.loads((out / "job.json").read_text())
        found = glob.glob(f"{k['volumes']}/pv*/{rec['name']}/rayscale-result.json")
        if not found:
            raise RuntimeError(f"no {rec['name']}/rayscale-result.json on the results volume")
        ckpts = glob.glob(f"{os.path.dirname(found[0])}/**/checkpoint_*", recursive=True)
        uid = os.stat(found[0]).st_uid
        if uid != 1000 or not ckpts:
            raise RuntimeError(f"result owned by uid {uid}, {len(ckpts)} checkpoints")
        return {"trials_completed": rec["trials_completed"], "result": found[0], "owner_uid": uid,
                "checkpoints": len(ckpts)}  # fmt: skip

    run.step("the bundled job with checkpoints; its result on the claim, written by uid 1000",
             job_with_checkpoints)  # fmt: skip

    study = out / "k8s-study"

    def scaling():
        sh(*rs, "scaling", "--provider", "kuberay", "--workers", "1,2", "--repeats", "3",
           "--baselines", "none", "--state-dir", str(state), "--out", str(study), "--",
           *JOB, env=env)  # fmt: skip
        rc = json.loads(kc("get", "raycluster", "-o", "json"))["items"][0]
        group = rc["spec"]["workerGroupSpecs"][0]
        deleted = (group.get("scaleStrategy") or {}).get("workersToDelete") or []
        # Ray counts the worker gone at once; its pod terminates in its grace period.
        t0, pods = time.monotonic(), []
        while time.monotonic() - t0 < 120:
            pods = kc("get", "pods", "-l", "ray.io/node-type=worker", "-o", "name").split()
            if len(pods) == 1:
                break
            time.sleep(2)
        gone_s = round(time.monotonic() - t0, 1)
        if group["replicas"] != 1 or not deleted or len(pods) != 1 or deleted[0] in pods[0]:
            raise RuntimeError(f"after the study: replicas {group['replicas']}, workersToDelete "
                               f"{deleted}, worker pods {pods}")  # fmt: skip
        s = json.loads((study / "study.json").read_text())
        # the median of the interleaved repeats: one ~10 s run moves by 15 % on this machine
        return {"points": {p["workers"]: statistics.median(r["wall_s"] for r in p["runs"])
                           for p in s["points"]},
                "scaled_down_through_workersToDelete": deleted,
                "named_pod_gone_after_study_s": gone_s}  # fmt: skip

    measured = run.step("scaling --workers 1,2 (back to 1 through workersToDelete)", scaling)

    def plan_vs_measured():
        # The plan is told the target's shape: worker pods packed on this one node, as
        # many as its CPUs hold at their limit.
        from rayscale import manifests

        cpu = kc("get", "node", "rayscale-k8s", "-o", "jsonpath={.status.allocatable.cpu}")
        node_cpus = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        per_node = max(1, int(node_cpus // float(manifests.PROFILES["small"].worker_cpu)))
        run.doc["plan_workers_per_node"] = per_node
        plan_dir = out / "plan"
        sh(*rs, "plan", "--study", str(local / "study.json"), "--workers", "1,2",
           "--workers-per-node", str(per_node), "--out", str(plan_dir), env=env)  # fmt: skip
        rows = json.loads((plan_dir / "plan.json").read_text())["rows"]
        cmp = []
        for r in rows:
            m = measured["points"][str(r["workers"])] if str(r["workers"]) in measured["points"] \
                else measured["points"][r["workers"]]  # fmt: skip
            cmp.append({"workers": r["workers"], "predicted_s": r["wall_s"], "measured_s": m,
                        "error": round(r["wall_s"] / m - 1, 3)})  # fmt: skip
        run.doc["plan_vs_k8s"] = cmp
        bad = [c for c in cmp if abs(c["error"]) > 0.15]
        if bad:
            raise RuntimeError(f"predicted from the local study, off by more than 15 %: {bad}")
        return cmp

    if measured:
        run.step("plan --study <local study> --workers-per-node <this node's> against the "
                 "points Kubernetes measured (15 %)", plan_vs_measured)  # fmt: skip

    def rayjob():
        sh(*rs, "job", "submit", "--rayjob", "--state-dir", str(state), "--save",
           str(out / "rayjob.json"), "--", *JOB[:-4], "--num-samples", "2", env=env)  # fmt: skip
        rec = json.loads((out / "rayjob.json").read_text())
        if rec.get("trials_completed") != 2:
            raise RuntimeError(f"RayJob record: {rec}")
        return {"rayjob": rec.get("rayjob"), "trials_completed": 2}

    run.step("job submit --rayjob", rayjob)

    def own_script():
        o = sh(*rs, "job", "submit", "--state-dir", str(state), "--working-dir", "examples",
               "--", "python", "sleep_search.py", "--num-samples", "4", "--mean-s", "1", env=env)  # fmt: skip
        return o.strip().splitlines()[-1]  # where its Tune output is, and its trials

    run.step("job submit --working-dir examples -- python sleep_search.py", own_script)
    run.step("cluster down", lambda: sh(*rs, "cluster", "down", "--state-dir", str(state),
                                        env=env).strip().splitlines()[-1])  # fmt: skip

    def backends():
        """The tests whose behaviour both the emulator and this cluster show, on this one."""
        e = dict(env, RAYSCALE_K8S_KUBECONFIG=env["KUBECONFIG"],
                 RAYSCALE_KUBECTL=f"{k['bin']}/kubectl")  # fmt: skip
        p = subprocess.run([str(VENV / "pytest"), "-q", "-p", "no:cacheprovider",
                            "tests/test_kube_backends.py", "-k", "real"], env=e, cwd=ROOT,
                           capture_output=True, text=True, timeout=1200, check=False)  # fmt: skip
        summary = p.stdout.strip().splitlines()[-1]
        if p.returncode != 0 or "passed" not in summary or "skipped" in summary:
            raise RuntimeError(p.stdout[-1500:])
        return summary

    run.step("tests/test_kube_backends.py on this cluster (the emulator's side: pytest -m "
             "k8s_e2e)", backends)  # fmt: skip

    # A second cluster whose GCS lives in a Redis the kit deploys; its head pod deleted.
    def ft_up():
        said = sh(*up, "--gcs-ft", "redis", "--redis-image", IMAGES[1], "--state-dir",
                  str(ft_state), env=env).strip().splitlines()[-1]  # fmt: skip
        policy = kc("get", "networkpolicies", "-l", "app.kubernetes.io/created-by=rayscale", "-o",
                    "name")  # fmt: skip
        if not policy.strip().endswith("-redis"):
            raise RuntimeError("the kit's Redis runs without its NetworkPolicy")
        return f"{said}; {policy.strip()}"

    run.step("cluster up --gcs-ft redis (the kit's Redis, behind its NetworkPolicy)", ft_up)

    def head_deleted():
        args = [*JOB[:-4], "--num-samples", "6", "--max-rounds", "1500", "--checkpoint-every",
                "50", "--checkpoint-min-s", "0"]  # fmt: skip
        job = subprocess.Popen([*rs, "job", "submit", "--state-dir", str(ft_state), "--no-wait",
                                "--", *args, "--name", "ft"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
        job.communicate(timeout=300)
        time.sleep(25)  # trials running, some checkpoints written
        head = kc("get", "pods", "-l", "ray.io/node-type=head", "-o", "name").split()
        worker = kc("get", "pods", "-l", "ray.io/node-type=worker", "-o", "name").split()
        kc("delete", *head, "--wait=false")
        t0, now = time.monotonic(), []
        while time.monotonic() - t0 < 300:  # a new head, and the cluster answering again
            now = kc("get", "pods", "-l", "ray.io/node-type=head", "-o", "name").split()
            st = subprocess.run([*rs, "cluster", "status", "--json", "--state-dir", str(ft_state)],
                                env=env, capture_output=True, text=True, check=False)  # fmt: skip
            if now and now != head and st.returncode == 0 and '"alive_workers": 1' in st.stdout:
                break
            time.sleep(3)
        else:
            raise RuntimeError(f"the cluster did not answer again in 300 s (head pods: {now})")
        back_s = round(time.monotonic() - t0, 1)
        sh(*rs, "job", "resume", "ft", "--state-dir", str(ft_state), "--save",
           str(out / "resumed.json"), "--timeout", "900", "--", *args, env=env, timeout=1200)  # fmt: skip
        rec = json.loads((out / "resumed.json").read_text())
        stayed = kc("get", "pods", "-l", "ray.io/node-type=worker", "-o", "name").split() == worker
        if rec.get("trials_completed") != 6:
            raise RuntimeError(f"resumed search: {rec.get('trials_completed')} of 6 trials")
        return {"deleted": head, "new_head": now, "worker_stayed": stayed, "back_after_s": back_s,
                "trials_completed": rec["trials_completed"]}  # fmt: skip

    run.step("--gcs-ft redis: head pod deleted mid-search, job resume completes it", head_deleted)

    def ft_down():
        o = sh(*rs, "cluster", "down", "--state-dir", str(ft_state), env=env, timeout=600)
        left = kc("get", "rayclusters,deployments,services,secrets,networkpolicies", "-o",
                  "name").split()  # fmt: skip
        left = [x for x in left if "redis" in x or "raycluster" in x]
        if left:
            raise RuntimeError(f"left after down: {left}")
        return o.strip().splitlines()[-1]

    run.step("cluster down (KubeRay's Redis cleanup finalizer, then the Redis)", ft_down)


DOC = ROOT / "docs" / "kubernetes.md"
MARK = "<!-- e2e-k8s: scripts/k8s/e2e.py render(); tests/test_docs_figures.py checks it -->\n"


def rendered_block(text: str) -> str:
    return text.split(MARK, 1)[1].split("<!-- /e2e-k8s -->", 1)[0]


def render_docs(doc: dict) -> int:
    text = DOC.read_text()
    DOC.write_text(text.replace(MARK + rendered_block(text), MARK + render(doc)))
    return 0


def render(doc: dict) -> str:
    """docs/kubernetes.md's record of the last run, from its e2e.json (a test compares)."""
    v = doc.get("versions") or {}
    lines = [
        f"`make e2e-k8s`, {doc['created']}: Kubernetes {v.get('server', '?')} (kubelet "
        f"{v.get('kubelet', '?')}), {v.get('container_runtime', '?')}, {v.get('runc', '?')}, "
        f"{v.get('operator', '?')} with the {v.get('crds', '?')}, helm {v.get('helm', '?')}, "
        f"kind {v.get('kind', '?')}; "
        f"{'passed' if doc.get('passed') else 'FAILED'}.",
        "",
        "| step | outcome | wall s |",
        "|---|---|---|",
    ]
    for st in doc["steps"]:
        outcome = "ok" if st["ok"] else "failed: " + st["error"].splitlines()[-1][:160]
        lines.append(f"| {st['step']} | {outcome} | {st['wall_s']} |")
    if doc.get("plan_vs_k8s"):
        lines += ["", "| workers | planned from the local study, s | measured on Kubernetes, s | error |",
                  "|---|---|---|---|"]  # fmt: skip
        for c in doc["plan_vs_k8s"]:
            lines.append(f"| {c['workers']} | {c['predicted_s']} | {c['measured_s']} | "
                         f"{c['error'] * 100:+.1f} % |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
