"""make e2e-onprem: Ray's cluster launcher over SSH to separate hosts, as on VMs and on-prem
machines. Three containers of the on-prem host image (docker/onprem-host.Dockerfile: the
kit's image with sshd and rsync), each with its own address on a network this run makes,
an SSH key made for this run, and one volume mounted at /mnt/rayscale on every host (a
stand-in for the NFS export an on-prem cluster shares). The shipped cluster/onprem.yaml
runs unchanged; the hosts, user and key come from the kit's flags and environment.
Each step's outcome and wall time: results/onprem/e2e.json.

python scripts/onprem/e2e.py [--out results/onprem] [--keep-hosts]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from rayscale import procs  # noqa: E402
from scripts.k8s.e2e import Run, sh  # noqa: E402

VENV = ROOT / ".venv" / "bin"
DOCKER = os.environ.get("RAYSCALE_DOCKER") or shutil.which("docker") or "docker"
HOST_IMAGE = os.environ.get("RAYSCALE_ONPREM_IMAGE", "rayscale-onprem-host:0.1.0")
SHARED = "/mnt/rayscale"
# Trials of a few seconds each, with checkpoints, their storage on the shared path.
JOB = ["--data", "synthetic:rows=20000,features=20,noise=1.0,seed=0", "--num-samples", "6",
       "--max-rounds", "400", "--scheduler", "fifo", "--storage-path", SHARED,
       "--checkpoint-every", "50", "--checkpoint-min-s", "0"]  # fmt: skip
OWN_SCRIPT = f"""\
import json, os, pathlib
from ray import tune

def trainable(config):
    # Read on the worker (Tune runs the trial in its own folder): the working_dir reached it.
    here = pathlib.Path(os.environ["TUNE_ORIG_WORKING_DIR"])
    scale = json.loads((here / "scale.json").read_text())["scale"]
    tune.report({{"score": config["x"] * scale}})

tuner = tune.Tuner(trainable, param_space={{"x": tune.grid_search([1, 2, 3])}},
                   run_config=tune.RunConfig(storage_path="{SHARED}", name="own-script"))
best = tuner.fit().get_best_result("score", "max")
print("OWN-SCRIPT BEST", best.metrics["score"])
"""


def docker(*args: str, **kw) -> str:
    return sh(DOCKER, *args, **kw)


def ray_processes(host: str) -> list[str]:
    out = docker("exec", host, "ps", "-eo", "comm=", check=False)
    return [p for p in out.split() if p in ("raylet", "gcs_server") or p.startswith("ray::")]


DOC = ROOT / "docs" / "cloud.md"
MARK = "<!-- e2e-onprem -->\n"


def rendered_block(text: str) -> str:
    return text.split(MARK, 1)[1].split("<!-- /e2e-onprem -->", 1)[0]


def render(doc: dict) -> str:
    """docs/cloud.md's record of the last run, from its e2e.json (a test compares)."""
    ok = all(st["ok"] for st in doc["steps"])
    lines = [f"`make e2e-onprem`, {doc['created']}, hosts of {doc.get('host_image')}; "
             f"{'passed' if ok else 'FAILED'}.", "", "| step | outcome | wall s |",
             "|---|---|---|"]  # fmt: skip
    for st in doc["steps"]:
        outcome = "ok" if st["ok"] else "failed: " + st["error"].splitlines()[-1][:160]
        lines.append(f"| {st['step']} | {outcome} | {st['wall_s']} |")
    return "\n".join(lines) + "\n"


def render_docs(doc: dict) -> None:
    text = DOC.read_text()
    DOC.write_text(text.replace(MARK + rendered_block(text), MARK + render(doc)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/onprem")
    ap.add_argument("--keep-hosts", action="store_true", help="leave the host containers up")
    ap.add_argument("--render-docs", action="store_true", help="only re-render the docs' table")
    a = ap.parse_args()
    if a.render_docs:
        render_docs(json.loads((ROOT / a.out / "e2e.json").read_text()))
        return 0
    run = Run(ROOT / a.out, "e2e-onprem")
    run.doc["host_image"] = HOST_IMAGE
    tmp = Path(tempfile.mkdtemp(prefix="rayscale-e2e-onprem-"))
    tag = f"rayscale-onprem-{secrets.token_hex(3)}"
    names = {role: f"{tag}-{role}" for role in ("head", "w1", "w2")}
    state = tmp / "state"
    key, wrong = tmp / "id_ed25519", tmp / "wrong_ed25519"
    env = dict(os.environ, PATH=f"{VENV}:{os.environ['PATH']}")
    rs = [str(VENV / "rayscale")]
    try:
        for k in (key, wrong):
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", tag, "-f", str(k))

        def hosts():
            # Fixed addresses: a host that comes back keeps its address, as a machine does.
            net = f"10.213.{secrets.randbelow(250) + 1}"
            docker("network", "create", "--label", tag, "--subnet", f"{net}.0/24", tag)
            docker("volume", "create", "--label", tag, f"{tag}-shared")
            for i, name in enumerate(names.values()):
                # Sized as small machines: 1 CPU and 3 GiB each, /dev/shm for the object store.
                docker("run", "-d", "--name", name, "--hostname", name, "--network", tag,
                       "--ip", f"{net}.{10 + i}", "--label", tag, "--cpus", "1", "--memory",
                       "3g", "--shm-size", "1g",
                       "-v", f"{tag}-shared:{SHARED}", HOST_IMAGE)  # fmt: skip
                docker("exec", "-i", name, "sh", "-c",
                       "install -d -o ray -g ray -m 700 /home/ray/.ssh && cat > "
                       "/home/ray/.ssh/authorized_keys && chown ray:ray "
                       "/home/ray/.ssh/authorized_keys && chmod 600 /home/ray/.ssh/authorized_keys",
                       input=key.with_suffix(".pub").read_text())  # fmt: skip
            docker("exec", names["head"], "chown", "ray:ray", SHARED)
            ips = {r: docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}"
                             "{{end}}", n).strip() for r, n in names.items()}  # fmt: skip
            env["RAYSCALE_HOSTS"] = ",".join(ips[r] for r in ("head", "w1", "w2"))
            if not procs.wait_for(lambda: all(procs.port_open(ip, 22) for ip in ips.values()), 60):
                raise RuntimeError("sshd did not listen on every host within 60 s")
            return {"hosts": ips, "shared": f"volume {tag}-shared at {SHARED} on every host"}

        run.step("3 hosts (sshd, own addresses, a key made for this run, shared storage)",
                 hosts, needed=True)  # fmt: skip
        up = [*rs, "cluster", "up", "--provider", "ray-up", "--config",
              str(ROOT / "cluster" / "onprem.yaml"), "--state-dir", str(state)]  # fmt: skip

        def refused(extra: list[str], want: str, prepare=None, undo=None):
            def step():
                if prepare:
                    prepare()
                try:
                    p = subprocess.run([*up, "--workers", "1", *extra], env=env, cwd=ROOT,
                                       capture_output=True, text=True, timeout=600)  # fmt: skip
                finally:
                    if undo:
                        undo()
                lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
                if p.returncode == 0 or not lines or want not in lines[-1]:
                    raise RuntimeError(f"exit {p.returncode}: {p.stderr[-800:]}")
                if (state / "cluster.json").exists():
                    raise RuntimeError("a refused up left a record")
                return lines[-1]

            return step

        run.step("a wrong key: one line naming the hosts", refused(
            ["--ssh-user", "ray", "--ssh-key", str(wrong)], "Permission denied (publickey)"))  # fmt: skip
        profile = "/etc/profile.d/rayscale-venv.sh"
        run.step("a host without Ray on the login PATH: one line naming it", refused(
            ["--ssh-user", "ray", "--ssh-key", str(key)], "has no ray command",
            prepare=lambda: docker("exec", names["head"], "mv", profile, profile + ".off"),
            undo=lambda: docker("exec", names["head"], "mv", profile + ".off", profile)))  # fmt: skip
        failing = tmp / "onprem-failing-setup.yaml"
        cfg = yaml.safe_load((ROOT / "cluster" / "onprem.yaml").read_text())
        cfg["setup_commands"] = ["echo preparing", "pip install --no-index rayscale-no-such-pkg"]
        failing.write_text(yaml.safe_dump(cfg, sort_keys=False))
        run.step("a setup command that fails: one line naming it, with its output's last lines",
                 refused(["--ssh-user", "ray", "--ssh-key", str(key), "--config", str(failing)],
                         "No matching distribution found for rayscale-no-such-pkg"))  # fmt: skip
        run.step("cluster up --config cluster/onprem.yaml --workers 1 (RAYSCALE_HOSTS, "
                 "--ssh-user, --ssh-key)", lambda: sh(
                     *up, "--workers", "1", "--ssh-user", "ray", "--ssh-key", str(key),
                     env=env, timeout=900).strip().splitlines()[-1], needed=True)  # fmt: skip

        def bundled():
            saved = tmp / "job.json"
            sh(*rs, "job", "submit", "--state-dir", str(state), "--save", str(saved), "--",
               *JOB, "--name", "onprem", env=env, timeout=1200)  # fmt: skip
            rec = json.loads(saved.read_text())
            seen = docker("exec", names["w1"], "sh", "-c",
                          f"ls -n {SHARED}/onprem | head -3; ls {SHARED}/onprem | wc -l")  # fmt: skip
            if rec.get("trials_completed") != 6:
                raise RuntimeError(f"{rec.get('trials_completed')} of 6 trials")
            return {"trials_completed": 6, "wall_s": rec.get("wall_s"),
                    "on_a_worker_host": seen.split("\n")[:4]}  # fmt: skip

        run.step("the bundled job with checkpoints, its storage on the shared path", bundled)

        def not_shared():
            p = subprocess.run([*rs, "job", "submit", "--state-dir", str(state), "--", *JOB,
                                "--storage-path", "/tmp/rayscale-not-shared", "--name", "blind"],
                               env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            if p.returncode == 0 or not lines or "is not shared" not in lines[-1]:
                raise RuntimeError(f"exit {p.returncode}: {p.stderr[-800:]}")
            return lines[-1]

        run.step("a --storage-path only the head has: the job refuses at its start, naming the "
                 "worker hosts", not_shared)  # fmt: skip

        def scale():
            sh(*rs, "cluster", "scale", "--workers", "2", "--state-dir", str(state), env=env,
               timeout=900)  # fmt: skip
            st = json.loads(sh(*rs, "cluster", "status", "--json", "--state-dir", str(state),
                               env=env))  # fmt: skip
            if st.get("alive_workers") != 2:
                raise RuntimeError(f"status after scale: {st}")
            return {"alive_workers": 2}

        run.step("cluster scale --workers 2", scale)

        def worker_lost():
            saved = tmp / "lost.json"
            longer = [*JOB, "--num-samples", "12", "--max-rounds", "6000"]  # about 45 s on 2
            job = subprocess.Popen([*rs, "job", "submit", "--state-dir", str(state), "--save",
                                    str(saved), "--", *longer, "--name", "lost"], env=env,
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)  # fmt: skip
            time.sleep(15)  # trials running on both workers, checkpoints written
            if job.poll() is not None:
                raise RuntimeError("the search ended before the worker host was stopped")
            on_w2 = ray_processes(names["w2"])
            docker("stop", "-t", "0", names["w2"])
            said, _ = job.communicate(timeout=1200)
            if job.returncode != 0:
                raise RuntimeError(said[-800:])
            rec = json.loads(saved.read_text())
            if rec.get("trials_completed") != 12:
                raise RuntimeError(f"{rec.get('trials_completed')} of 12 trials")
            return {"stopped": names["w2"], "its_ray_processes_when_stopped": on_w2,
                    "trials_completed": 12, "retried_trials": rec.get("retried_trials"),
                    "wall_s": rec.get("wall_s")}  # fmt: skip

        run.step("a worker host stopped mid-search (docker stop); the search completes",
                 worker_lost)  # fmt: skip

        def own_script():
            d = tmp / "own"
            d.mkdir()
            (d / "my_tune.py").write_text(OWN_SCRIPT)
            (d / "scale.json").write_text('{"scale": 10}')
            out = sh(*rs, "job", "submit", "--state-dir", str(state), "--working-dir", str(d),
                     "--", "python", "my_tune.py", env=env, timeout=900)  # fmt: skip
            logs = out
            if "OWN-SCRIPT BEST 30" not in logs:
                job_id = next(w for w in out.split() if w.startswith("raysubmit_"))
                logs = sh(*rs, "job", "logs", job_id, "--state-dir", str(state), env=env)
            if "OWN-SCRIPT BEST 30" not in logs:
                raise RuntimeError(logs[-800:])
            return "OWN-SCRIPT BEST 30 (scale.json read on the workers)"

        run.step("job submit --working-dir: a user's own Tune script, its files synced",
                 own_script)  # fmt: skip

        def down_unreachable():
            p = subprocess.run([*rs, "cluster", "down", "--state-dir", str(state)], env=env,
                               cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
            w2 = env["RAYSCALE_HOSTS"].split(",")[2]
            last = (p.stderr.strip().splitlines() or [""])[-1]
            if p.returncode == 0 or w2 not in last or not (state / "cluster.json").exists():
                raise RuntimeError(f"exit {p.returncode}: {p.stderr[-800:]}")
            return last

        run.step("cluster down while a worker host is unreachable: names it, keeps the "
                 "record, exits non-zero", down_unreachable)  # fmt: skip

        def down():
            docker("start", names["w2"])  # the host back, its Ray gone with its processes
            w2 = env["RAYSCALE_HOSTS"].split(",")[2]
            if not procs.wait_for(lambda: procs.port_open(w2, 22), 60):
                raise RuntimeError(f"{names['w2']} did not come back at {w2}")
            said = sh(*rs, "cluster", "down", "--state-dir", str(state), env=env, timeout=600)
            left = {r: ray_processes(n) for r, n in names.items()}
            if any(left.values()) or (state / "cluster.json").exists():
                raise RuntimeError(f"Ray processes left: {left}")
            return {"said": said.strip().splitlines()[-1:], "ray_processes_left": left}

        run.step("cluster down again, the host back: no Ray process left on any host", down)
    finally:
        if (state / "cluster.json").exists():
            subprocess.run([*rs, "cluster", "down", "--state-dir", str(state)], env=env,
                           check=False, capture_output=True)  # fmt: skip
        if not a.keep_hosts:
            subprocess.run([DOCKER, "rm", "-f", *names.values()], capture_output=True)
            subprocess.run([DOCKER, "network", "rm", tag], capture_output=True)
            subprocess.run([DOCKER, "volume", "rm", f"{tag}-shared"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        run.save()
        render_docs(run.doc)
    return 0 if all(s["ok"] for s in run.doc["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
