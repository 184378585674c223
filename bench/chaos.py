"""`make chaos`: a scaling study on the local provider while a monkey kills a random worker
node (every process of it, SIGKILL: a machine lost) every --every seconds; the study keeps
each point's worker count (rayscale.study.measure.Keeper) and marks the runs that were hit. Writes
chaos.json: faults injected, trials lost (must be 0), runs and points disturbed.

    python -m bench.chaos --workers 1,2,3 --every 20 --out results/reliability/chaos -- <job args>
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from rayscale import procs
from rayscale.state import StateDir


class Monkey(threading.Thread):
    """Kills a random worker node of the cluster recorded in `state` every `every` s."""

    def __init__(self, state: Path, every: float, seed: int):
        super().__init__(daemon=True)
        self.state, self.every, self.rng = state, every, random.Random(seed)
        self.kills: list[dict] = []
        self.stop = threading.Event()

    def _kill_one(self) -> None:
        rec = StateDir(self.state).read()
        workers = (rec or {}).get("workers") or []
        if not workers:
            return
        victim = self.rng.choice(workers)
        tree = list(procs.tree([victim["proc"]["pid"]]).values())
        if not tree:
            return
        for p in tree:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.kills.append({"at": round(time.time(), 3), "worker": f"w{victim['index']}"})
        print(f"chaos: killed worker w{victim['index']} ({len(tree)} processes)", flush=True)

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self._kill_one()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--every", type=float, default=20.0, help="seconds between kills")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/reliability/chaos")
    ap.add_argument("job_args", nargs="*")
    a = ap.parse_args()
    out = Path(a.out)
    state = out / ".state"
    env = {**os.environ, "RAYSCALE_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(Path(sys.executable).parent / "rayscale"),
        "scaling", "--provider", "local", "--workers", a.workers, "--repeats", str(a.repeats),
        "--baselines", "none", "--out", str(out), "--", *a.job_args,
    ]  # fmt: skip
    monkey = Monkey(state, a.every, a.seed)
    t0 = time.time()
    study_proc = subprocess.Popen(cmd, env=env)
    monkey.start()
    try:
        rc = study_proc.wait()
    finally:
        monkey.stop.set()
        if study_proc.poll() is None:
            study_proc.send_signal(signal.SIGTERM)
            study_proc.wait()
    monkey.join()
    # progress.json holds every finished run, also when the study did not finish.
    progress = out / "progress.json"
    runs = json.loads(progress.read_text())["runs"] if progress.exists() else []
    study = json.loads((out / "study.json").read_text()) if rc == 0 else {}
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(cmd[1:]),
        "every_s": a.every,
        "wall_s": round(time.time() - t0, 1),
        "study_exit": rc,
        "faults_injected": len(monkey.kills),
        "kills": monkey.kills,
        "runs": len(runs),
        "trials_completed": sum(r["trials_completed"] for r in runs),
        "trials_lost": sum(r["trials"] - r["trials_completed"] for r in runs),
        "runs_disturbed": sum(1 for r in runs if r.get("disturbed_by")),
        "points_disturbed": [p["workers"] for p in study.get("points", []) if p["disturbed"]],
        "retries": sum(r.get("retries", 0) for r in runs),
        "workers_replaced": sum(r.get("workers_replaced", 0) for r in runs),
    }
    (out / "chaos.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "kills"}, indent=2))
    sys.exit(rc or (1 if report["trials_lost"] else 0))


if __name__ == "__main__":
    main()
