"""The scaling study's one-page figure."""

from __future__ import annotations

from pathlib import Path


def scaling_png(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = study["points"]
    n = [p["workers"] for p in pts]
    fit = study["fit"]
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    m = study["machine"]
    fig.suptitle(
        f"rayscale scaling · provider {study['provider']} · data {study['data']}\n"
        f"{m['cpus']} cores ({m['cpu_model'] or 'cpu'}), {m['memory_gib']} GiB, host {m['hostname']}",
        fontsize=11,
    )

    a = ax[0][0]
    for p in pts:
        a.scatter(
            [p["workers"]] * len(p["runs"]), [r["wall_s"] for r in p["runs"]], color="0.6", s=12
        )
    a.plot(n, [p["wall_s_median"] for p in pts], "o-", label="Ray Tune (median)")
    for name, b in study.get("baselines", {}).items():
        label = f"{name}" + (f" (n_jobs={b['n_jobs']})" if "n_jobs" in b else "")
        a.axhline(
            b["wall_s"], ls="--", lw=1, label=label, color={"sequential": "C3"}.get(name, "C2")
        )
    a.set(title="wall time of the search", xlabel="workers", ylabel="seconds", xticks=n)
    a.set_ylim(bottom=0)
    a.legend(fontsize=8)

    a = ax[0][1]
    a.plot(n, [p["speedup"] for p in pts], "o", color="C0", label="measured", zorder=3)
    if fit.get("predicted"):
        g = [q["workers"] for q in fit["predicted"]]
        a.plot(g, g, ":", color="0.5", label="ideal (linear)")
        a.plot(
            g,
            [q["amdahl_speedup"] for q in fit["predicted"]],
            "-",
            color="C1",
            label=f"Amdahl s={fit['amdahl_serial_fraction']:.3f}",
        )
        a.plot(
            g,
            [q["speedup"] for q in fit["predicted"]],
            "--",
            color="C2",
            label=f"USL σ={fit['usl_sigma']:.3f} κ={fit['usl_kappa']:.4f}",
        )
        a.set_xscale("log", base=2)
        a.set_yscale("log", base=2)
    a.set(
        title=f"speedup vs {study.get('speedup_base_workers', 1)} worker(s), fitted and extrapolated",
        xlabel="workers",
        ylabel="speedup",
    )
    a.legend(fontsize=8)

    a = ax[1][0]
    a.plot(n, [p["efficiency"] for p in pts], "o-", label="efficiency")
    busy = [p.get("cpu_busy_avg") for p in pts]
    if any(b is not None for b in busy):
        a.plot(n, busy, "s--", label="worker CPU busy")
    a.axhline(1.0, ls=":", color="0.5")
    a.set(title="parallel efficiency", xlabel="workers", ylabel="fraction", xticks=n, ylim=(0, 1.1))
    a.legend(fontsize=8)

    a = ax[1][1]
    for p in pts:
        a.scatter([p["workers"]] * len(p["runs"]), [r["best_rmse"] for r in p["runs"]], color="C0")
    seq = study.get("baselines", {}).get("sequential")
    if seq and seq.get("best_rmse") is not None:
        a.axhline(seq["best_rmse"], ls="--", color="C3", lw=1, label="sequential, same configs")
        a.legend(fontsize=8)
    a.set(
        title="best validation RMSE (must not degrade)", xlabel="workers", ylabel="RMSE", xticks=n
    )

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
