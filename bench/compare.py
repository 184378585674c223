"""The figures of several `make bench` runs side by side, as a Markdown table
(docs/benchmarks.md): `python -m bench.compare NAME=results/.../bench.json ...`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# The figures the runs share, in the order docs/benchmarks.md gives them.
ROWS = [
    "head_plus_2_ready_s",
    "submit_to_running_s",
    "search_s_1_worker",
    "search_s_2_workers",
    "idle_head_rss_gib",
    "speedup_1_to_2",
    "job_speedup_1_to_2",
    "tune_over_joblib_wall",
    "overhead_per_trial_s",
    "trial_slowdown_under_ray",
    "asha_rmse_vs_fifo",
    "asha_time_vs_fifo",
    "replay_error_max",
    "asha_replay_error_abs",
]


def cell(bench: dict, key: str) -> str:
    """A figure as the tables print it: the value, then ✓ / ✗ where it has a target."""
    v = bench["figures"].get(key)
    if v is None:
        return "-"
    met = bench["targets"].get(key, {}).get("met")
    text = f"{v:g}" if isinstance(v, float) else str(v)
    return text + ("" if met is None else (" ✓" if met else " ✗"))


def table(runs: dict[str, dict], targets: dict[str, str]) -> str:
    head = ["figure", *runs, "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in ROWS:
        cells = [cell(b, key) for b in runs.values()]
        lines.append(f"| `{key}` | " + " | ".join(cells) + f" | {targets.get(key, '-')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="NAME=FILE")
    a = ap.parse_args(argv)
    runs = {}
    for spec in a.runs:
        name, _, path = spec.partition("=")
        runs[name] = json.loads(Path(path).read_text())
    from bench.bench import TARGETS

    targets = {k: f"{op} {v:g}" for k, (op, v) in TARGETS.items()}
    print(table(runs, targets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
