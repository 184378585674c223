"""The tables the job prints for a person reading its log."""

from __future__ import annotations

import json


def print_table(title: str, rows: list[tuple]) -> None:
    width = max(len(str(r[0])) for r in rows)
    print(f"\n{title}")
    for row in rows:
        print("  " + str(row[0]).ljust(width) + "  " + "  ".join(f"{c:>14}" for c in row[1:]))


def fmt(x, nd=3):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def print_summary(record: dict) -> None:
    """The job's own tables, for whoever reads its log (the launcher reads the record)."""
    baseline, tuned = record["baseline"], record["tuned"]
    print_table(
        "Test-set scores (retrained on the whole train split)",
        [
            ("model", "RMSE", "MAE", "R2"),
            (
                "baseline (defaults)",
                fmt(baseline["rmse"]),
                fmt(baseline["mae"]),
                fmt(baseline["r2"]),
            ),
            (
                "tuned (best config)",
                *(fmt(tuned[k]) if tuned else "-" for k in ("rmse", "mae", "r2")),
            ),
        ],
    )
    modes = record.get("modes") or {record["mode"]: record}
    ref = modes.get("sequential", {}).get("wall_s")
    print_table(
        "Execution",
        [
            ("mode", "train time s", "total s", "cores busy", "speedup"),
            *[
                (
                    m,
                    fmt(s["sum_train_s"], 1),
                    fmt(s["wall_s"], 1),
                    fmt(s["cores_busy_avg"], 2),
                    fmt(ref / s["wall_s"], 2) + "x" if ref and s["wall_s"] else "-",
                )
                for m, s in modes.items()
            ],
        ],
    )
    print(f"\nbest config: {json.dumps(record['best_config'])}", flush=True)
