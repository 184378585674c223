"""The scaling study's one-page figure: four panels, one function each."""

from __future__ import annotations

from pathlib import Path


def scaling_png(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    m = study["machine"]
    fig.suptitle(
        f"rayscale scaling · provider {study['provider']} · data {study['data']}\n"
        f"{m['cpus']} cores ({m['cpu_model'] or 'cpu'}), {m['memory_gib']} GiB, host {m['hostname']}",
        fontsize=11,
    )
    _wall(ax[0][0], study)
    _speedup(ax[0][1], study)
    _efficiency(ax[1][0], study)
    _quality(ax[1][1], study)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _workers(study: dict) -> list[int]:
    return [p["workers"] for p in study["points"]]


def _wall(a, study: dict) -> None:
    """Every run's wall time, the medians, and the no-cluster baselines."""
    pts, n = study["points"], _workers(study)
    for p in pts:
        a.scatter(
            [p["workers"]] * len(p["runs"]), [r["wall_s"] for r in p["runs"]], color="0.6", s=12
        )
        hit = [r["wall_s"] for r in p["runs"] if r.get("disturbed_by")]
        if hit:  # retried trials or replaced workers: not a clean time
            a.scatter([p["workers"]] * len(hit), hit, marker="x", color="C3", s=40)
    a.plot(n, [p["wall_s_median"] for p in pts], "o-", label="Ray Tune (median)")
    if any(p.get("disturbed_runs") for p in pts):
        a.scatter([], [], marker="x", color="C3", label="disturbed run")
    for name, b in study.get("baselines", {}).items():
        label = f"{name}" + (f" (n_jobs={b['n_jobs']})" if "n_jobs" in b else "")
        a.axhline(
            b["wall_s"], ls="--", lw=1, label=label, color={"sequential": "C3"}.get(name, "C2")
        )
    a.set(title="wall time of the search", xlabel="workers", ylabel="seconds", xticks=n)
    a.set_ylim(bottom=0)
    a.legend(fontsize=8)


def _speedup(a, study: dict) -> None:
    """Measured speedup; the replay model's prediction (its leave-one-out error beside each
    measured point); the Amdahl / USL fits where 3 or more counts were measured."""
    pts, fit = study["points"], study["fit"]
    a.plot(
        _workers(study), [p["speedup"] for p in pts], "o", color="C0", label="measured", zorder=3
    )
    pred = study.get("prediction")
    if pred:
        g = [q["workers"] for q in pred["points"]]
        a.plot(g, g, ":", color="0.5", label="ideal (linear)")
        a.plot(
            g,
            [q["speedup"] for q in pred["points"]],
            "s--",
            color="C3",
            ms=4,
            label="predicted (replay)",
        )
        measured = {p["workers"]: p["speedup"] for p in pts}
        for v in pred["validation"]:  # beside the measured point: its leave-one-out error
            a.annotate(
                f"left out: {v['error']:+.0%}",
                (v["workers"], measured[v["workers"]]),
                textcoords="offset points",
                xytext=(6, -10),
                fontsize=8,
                color="C3",
            )
    if fit.get("predicted"):
        g = [q["workers"] for q in fit["predicted"]]
        a.plot(
            g,
            [q["amdahl_speedup"] for q in fit["predicted"]],
            "-",
            color="C1",
            label=f"Amdahl fit s={fit['amdahl_serial_fraction']:.3f}",
        )
        a.plot(
            g,
            [q["speedup"] for q in fit["predicted"]],
            "--",
            color="C2",
            label=f"USL fit σ={fit['usl_sigma']:.3f} κ={fit['usl_kappa']:.4f}",
        )
    if pred or fit.get("predicted"):
        a.set_xscale("log", base=2)
        a.set_yscale("log", base=2)
    a.set(
        title=f"speedup vs {study.get('speedup_base_workers', 1)} worker(s): measured and predicted",
        xlabel="workers",
        ylabel="speedup",
    )
    a.legend(fontsize=8)


def _efficiency(a, study: dict) -> None:
    """Parallel efficiency beside how busy the workers' CPUs were."""
    pts, n = study["points"], _workers(study)
    a.plot(n, [p["efficiency"] for p in pts], "o-", label="efficiency")
    busy = [p.get("cpu_busy_avg") for p in pts]
    if any(b is not None for b in busy):
        a.plot(n, busy, "s--", label="worker CPU busy")
    a.axhline(1.0, ls=":", color="0.5")
    a.set(title="parallel efficiency", xlabel="workers", ylabel="fraction", xticks=n, ylim=(0, 1.1))
    a.legend(fontsize=8)


def _quality(a, study: dict) -> None:
    """The best model at every point: more workers must not find a worse one."""
    for p in study["points"]:
        best = [r.get("best_metric", r.get("best_rmse")) for r in p["runs"]]
        a.scatter(
            [p["workers"]] * len(best),
            [b if b is not None else float("nan") for b in best],
            color="C0",
        )
    seq = study.get("baselines", {}).get("sequential")
    if seq and (best_seq := seq.get("best_metric", seq.get("best_rmse"))) is not None:
        a.axhline(best_seq, ls="--", color="C3", lw=1, label="sequential, same configs")
        a.legend(fontsize=8)
    m = study.get("metric") or {"name": "valid RMSE", "mode": "min"}
    a.set(
        title=f"best {m['name'] or 'metric'} (must not degrade)",
        xlabel="workers",
        ylabel=m["name"] or "metric",
        xticks=_workers(study),
    )
