"""`make storage-faults` (python -m bench.storage_faults): the two storage faults of a long search, on a local cluster (head +
2 workers), each injected once the search has finished FAULT_AT trials, then `job resume`:

- vanish: the search's folder under --storage-path is deleted (a clean-up job, a volume
  unmounted);
- full: the storage path (a tmpfs of its own) is filled by another writer; after the fault
  the filler is deleted (room made) and the search resumed.

Writes results/reliability/storage.json: for each fault the seconds from the fault to the
job's end, the job's one line, the storage errors in its log, the trials finished before
the fault, and after the resume the trials completed, kept (finished before the fault and
not run again), started again and lost (must be 0). The full fault needs root (mount)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CLI = str(Path(sys.executable).parent / "rayscale")
STORAGE_ERRORS = ("Unable to set up cluster storage", "does not exist on storage", "No space left")


def _cli(state: Path, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "RAYSCALE_STATE_DIR": str(state)},
    )  # fmt: skip


def _finished(log: str) -> list[str]:
    return [
        json.loads(line.split(" ", 1)[1])["trial"]
        for line in log.splitlines()
        if line.startswith("RAYSCALE_PROGRESS")
    ]


def _wait(state: Path, job_id: str, until, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = _cli(state, "job", "logs", job_id).stdout
        if until(log):
            return log
        time.sleep(0.5)
    raise SystemExit(f"job {job_id}: timed out waiting")


def _ended(state: Path, job_id: str) -> str:
    while (s := _cli(state, "job", "status", job_id).stdout.strip()) in ("PENDING", "RUNNING"):
        time.sleep(0.5)
    return s


def fill(path: Path) -> Path:
    """Another writer takes every byte left on the file system at path."""
    filler = path / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 20))
    return filler


def vanish(path: Path) -> None:
    """A clean-up job deletes the search's folder while the search writes into it: what is
    written during the deletion goes too (one rmtree fails on a folder that fills again)."""
    for _ in range(50):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
    raise RuntimeError(f"{path} is written again faster than it is deleted")


def one_fault(state: Path, fault: str, storage: Path, job_args: list, fault_at: int) -> dict:
    name = f"storage-{fault}"
    job_id = _cli(state, "job", "submit", "--no-wait", "--", *job_args, "--storage-path", storage,
                  "--name", name).stdout.strip()  # fmt: skip
    _wait(state, job_id, lambda log: len(_finished(log)) >= fault_at)
    t_fault = time.monotonic()
    if fault == "full":
        filler = fill(storage)
    else:
        vanish(storage / name)
        filler = None
    status = _ended(state, job_id)
    to_end = time.monotonic() - t_fault
    log = _cli(state, "job", "logs", job_id).stdout
    before = _finished(log)
    line = next((ln for ln in reversed(log.splitlines()) if ln.startswith("error: ")), None)
    if filler:
        filler.unlink()  # room made
    resumed_at = time.time()
    t0 = time.monotonic()
    p = _cli(state, "job", "resume", name, "--json", "--", *job_args, "--storage-path", storage)
    out = {
        "fault": fault,
        "finished_before_fault": len(before),
        "fault_to_end_s": round(to_end, 2),
        "status": status,
        "line": line,
        "storage_errors_in_log": sum(log.count(e) for e in STORAGE_ERRORS),
        "resume_s": round(time.monotonic() - t0, 2),
        "resume_exit": p.returncode,
    }
    if p.returncode != 0:
        return {**out, "resume_error": p.stderr.strip().splitlines()[-1:], "lost": None}
    record = json.loads(p.stdout)
    resume_log = _cli(state, "job", "logs", re.search(r"raysubmit_\w+", p.stderr).group(0)).stdout
    restarted = re.search(r"starting again (\d+) trial", resume_log)
    ids = {t["trial_id"]: t for t in record["trials"] if not t.get("error")}
    kept = [i for i in before if i in ids and ids[i]["ended_at"] < resumed_at]
    return {
        **out,
        "trials": record["num_samples"],
        "completed": record["trials_completed"],
        "kept": len(kept),
        "run_again": len(before) - len(kept),
        "lost": record["num_samples"] - record["trials_completed"],
        "state_put_back": "put back Tune's state files" in resume_log,
        "restarted_without_checkpoint": int(restarted.group(1)) if restarted else 0,
        "full_rounds": all(t["rounds"] == t["config"]["num_boost_round"] for t in ids.values()),
    }


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-samples", type=int, default=12)
    ap.add_argument("--fault-at", type=int, default=4, help="finished trials before the fault")
    ap.add_argument("--out", default="results/reliability/storage.json")
    a = ap.parse_args()
    job_args = ["--data", "synthetic:rows=40000,features=20,noise=1.0,seed=3", "--num-samples",
                a.num_samples, "--max-rounds", 300, "--scheduler", "fifo", "--checkpoint-every",
                30, "--checkpoint-min-s", 0, "--seed", 5]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="rayscale-storage-") as d:
        state, root = Path(d) / "state", Path(d)
        up = _cli(state, "cluster", "up", "--workers", 2, "--memory-per-worker", 1.5)
        if up.returncode:
            raise SystemExit(up.stderr)
        try:
            (root / "vanish").mkdir()
            rows.append(one_fault(state, "vanish", root / "vanish", job_args, a.fault_at))
            print(json.dumps(rows[-1]), flush=True)
            if os.geteuid() == 0:
                with tmpfs(root / "full", "256m") as full:
                    rows.append(one_fault(state, "full", full, job_args, a.fault_at))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            _cli(state, "cluster", "down")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "workers": 2, "job": job_args,
               "faults": rows}  # fmt: skip
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    raise SystemExit(0 if all(r["lost"] == 0 for r in rows) else 1)


if __name__ == "__main__":
    main()
