"""How close the live ETA (rayscale/eta.py) comes to the search's real end: the standard
search (make bench's: synthetic 50k x 40, 16 configs, 300 rounds) under FIFO and under ASHA
on a 2-worker local cluster. For each run, the ETA that `job submit` showed when 25 %, 50 %
and 75 % of the trials had finished (from the progress records as they arrived), against
the time the search really had left (the job's record: the search window's end).

    .venv/bin/python -m bench.eta_accuracy --out results/bench/eta.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from bench import bench
from rayscale import eta, report

WORKERS = 2
FRACTIONS = (0.25, 0.5, 0.75)


def accuracy(records: list[dict], end: float) -> list[dict]:
    """The ETA at each fraction of trials done, against the search's real end."""
    out = []
    total = records[-1]["total"]
    for f in FRACTIONS:
        k = math.ceil(total * f)
        est = eta.Eta()
        for r in records[:k]:
            est.add(r)
        at = records[k - 1]["at"]
        guess = est.estimate(now=at)
        real = end - at
        out.append(
            {
                "fraction": f,
                "done": k,
                "eta_s": guess["left_s"],
                "eta_s_p10": guess["left_s_p10"],
                "eta_s_p90": guess["left_s_p90"],
                "real_s": round(real, 1),
                "error": round((guess["left_s"] - real) / real, 3) if real > 0 else None,
            }
        )
    return out


def table(run: dict) -> str:
    """docs/scaling.md's table of a run's file."""
    head = "| search | " + " | ".join(f"ETA at {f:.0%} of trials" for f in FRACTIONS) + " |"
    lines = [head, "|---" * (len(FRACTIONS) + 1) + "|"]
    for r in run["runs"]:
        cells = [
            f"{p['eta_s']:.1f} s for {p['real_s']:.1f} s ({p['error']:+.1%}; "
            f"p10-p90 {p['eta_s_p10']:.1f}-{p['eta_s_p90']:.1f} s)"
            for p in r["points"]
        ]
        lines.append(
            f"| {r['scheduler'].upper()}, {r['trials']} trials | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/eta.json")
    a = ap.parse_args(argv)
    runs = []
    with bench.local_cluster("rayscale-eta-", WORKERS) as (j, work):
        for scheduler in ("fifo", "asha"):
            args = [*bench.STANDARD, "--scheduler", scheduler, "--storage-path", str(work)]
            records: list[dict] = []
            job_id = j.submit([*args, "--name", f"eta-{scheduler}"])
            rec = j.result(job_id, j.wait(job_id, timeout=1800, on_progress=records.append))
            end = rec["search_window"][1]
            points = accuracy(records, end)
            runs.append(
                {
                    "scheduler": scheduler,
                    "trials": len(records),
                    "search_end": end,
                    "points": points,
                    "records": records,  # what the estimates read, as the job wrote them
                }
            )
            report.say(f"  {scheduler}: " + ", ".join(
                f"{p['fraction']:.0%} {p['error']:+.1%}" for p in points
            ))  # fmt: skip
    out = {
        "command": f"python -m bench.eta_accuracy --out {a.out}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "job_args": bench.STANDARD,
        "workers": WORKERS,
        "runs": runs,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    report.say(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
