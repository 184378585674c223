"""What people see: tables and progress on screen. (Files and plots: study outputs.)"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from rayscale import eta, predict, state, tune_console
from rayscale.console import say
from rayscale.state import command

if TYPE_CHECKING:  # a type only: the report sits above the providers, never under them
    from rayscale.providers.base import ClusterStatus

# Off a terminal rich assumes 80 columns and squeezes tables; logs and CI have room.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def job_line(line: str) -> None:
    """A line of a job's log as it arrives, on stderr; the job's machine lines left out."""
    if not line.startswith(("RAYSCALE_RESULT ", "RAYSCALE_PROGRESS ", "RAYSCALE_ERROR ")):
        say(line, err=True)


def error_line(text: str) -> None:
    print(f"rayscale: error: {' '.join(text.split())}", file=sys.stderr, flush=True)


def cluster_table(st: ClusterStatus) -> Table:
    t = Table(title=f"{st.provider} cluster  {st.dashboard_url}", title_justify="left")
    for col in ("role", "state", "CPUs", "memory GiB", "address", "node id"):
        t.add_column(col)
    for n in st.nodes:
        t.add_row(n.role, n.state, f"{n.cpus:g}", f"{n.memory_gib:g}", n.address, n.node_id[:12])
    return t


def show_cluster(st: ClusterStatus, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(st.to_dict(), indent=2))
    else:
        console.print(cluster_table(st))
        say(f"{st.alive_workers} workers alive, {st.worker_cpus:g} worker CPUs")


def show_clusters(rows: list[dict], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        say(f"no cluster recorded; start one with {command('cluster up')}")
        return
    t = Table()
    for col in ("name", "provider", "workers", "state", "dashboard", "state dir"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["name"], r["provider"] or "-", str(r["workers"] or "-"), r["state"],
            r["dashboard"] or "-", r["state_dir"],
        )  # fmt: skip
    console.print(t)


def show_result(rec: dict) -> None:
    say(
        f"job result: {rec.get('name')} ({rec.get('mode')}, {rec.get('rows')} rows x "
        f"{rec.get('features')} features, {rec.get('num_samples')} configs)"
    )
    t = Table(title="test-set scores", title_justify="left")
    for col in ("model", "RMSE", "MAE", "R²"):
        t.add_column(col, justify="right" if col != "model" else "left")
    for label, key in (("baseline (defaults)", "baseline"), ("tuned (best config)", "tuned")):
        m = rec.get(key) or {}
        t.add_row(label, *(f"{m[k]:.4g}" if k in m else "-" for k in ("rmse", "mae", "r2")))
    console.print(t)
    modes = rec.get("modes") or {rec.get("mode"): rec}
    ref = (modes.get("sequential") or {}).get("wall_s")
    e = Table(title="execution", title_justify="left")
    for col in ("mode", "trials", "train time s", "wall s", "cores busy", "speedup vs sequential"):
        e.add_column(col, justify="right" if col != "mode" else "left")
    for mode, s in modes.items():
        e.add_row(
            str(mode),
            str(s.get("trials_completed", "-")),
            f"{s['sum_train_s']:.1f}",
            f"{s['wall_s']:.1f}",
            f"{s['cores_busy_avg']:.2f}",
            f"{ref / s['wall_s']:.2f}x" if ref else "-",
        )
    console.print(e)
    cl = rec.get("cluster", {})
    say(
        f"cluster: {cl.get('nodes')} nodes, {cl.get('cpus')} CPUs · "
        f"{rec.get('trials_completed')}/{rec.get('num_samples')} trials completed · "
        f"result: {rec.get('result_path')}"
    )
    if ml := rec.get("mlflow"):
        say(
            f"mlflow: experiment {ml['experiment']!r} at {ml['uri']}, summary run {ml.get('summary_run_id', '-')}"
            + (f" · tracking stopped: {ml['error']}" if ml.get("error") else "")
        )


def save_result(rec: dict, path: str | None) -> Path:
    """A job's result record: to `path`, else results/<run name>.json, never over another
    run's record (then <run name>-2.json, ...) and never outside results/."""
    if path:
        where = Path(path)
    else:
        # The name is the job's: only its last path part, in the kit's safe alphabet.
        stem = (
            re.sub(r"[^\w.-]", "_", Path(str(rec.get("name") or "job")).name).lstrip(".") or "job"
        )
        folder = state.results_dir()
        where, n = folder / f"{stem}.json", 1
        while where.exists():
            n += 1
            where = folder / f"{stem}-{n}.json"
    save_json(rec, where)
    return where


def save_json(rec: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(rec, indent=2))


def save_measured(doc: dict, path: str, lines: list[str]) -> None:
    """A measurement script's end: DOC written to PATH, its summary LINES said."""
    save_json(doc, path)
    for line in lines:
        say(line)
    say(f"wrote {path}")


def show_jobs(rows, as_json: bool = False) -> None:
    data = [
        {
            "submission_id": r.submission_id,
            "status": str(r.status),
            "entrypoint": r.entrypoint,
            "start_time": r.start_time,
            "end_time": r.end_time,
            "message": r.message,
        }
        for r in rows
    ]
    data.sort(key=lambda d: d["start_time"] or 0)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    t = Table(title=f"{len(data)} jobs", title_justify="left")
    for col in ("submission id", "status", "seconds", "entrypoint"):
        t.add_column(col)
    for d in data:
        secs = (
            (d["end_time"] - d["start_time"]) / 1000 if d["end_time"] and d["start_time"] else None
        )
        t.add_row(
            d["submission_id"] or "-",
            d["status"],
            f"{secs:.1f}" if secs else "-",
            (d["entrypoint"] or "")[:70],
        )
    console.print(t)


@contextlib.contextmanager
def trial_progress(
    job_id: str, enabled: bool = True, price_per_hour: float | None = None
) -> Iterator:
    """A progress bar fed by the job's progress records, with the search's ETA (and cost,
    given a price); one line per finished trial when not a terminal; a no-op when off."""
    if not enabled:
        yield lambda rec: None
        return
    est = eta.Eta()

    def said(rec: dict) -> str:
        est.add(rec)
        now = time.time()
        guess = est.estimate(now)
        return eta.line(guess, eta.cost(guess, est.started, price_per_hour, now))

    if not sys.stderr.isatty():

        def line(rec: dict) -> None:
            best = rec.get("best_rmse")
            shown = f"{best:.4g}" if best is not None else "-"
            print(
                f"  {job_id}: trials {rec['done']}/{rec['total']}, best RMSE {shown}, {said(rec)}",
                file=sys.stderr,
                flush=True,
            )

        yield line
        return
    bar = Progress(
        TextColumn(f"[bold]{job_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best RMSE {task.fields[best]}"),
        TextColumn("{task.fields[eta]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    with bar:
        task = bar.add_task("trials", total=None, best="-", eta="")

        def update(rec: dict) -> None:
            best = rec.get("best_rmse")
            bar.update(
                task,
                total=rec["total"],
                completed=rec["done"],
                best=f"{best:.4g}" if best is not None else "-",
                eta=said(rec),
            )

        yield update


def metric_label(study: dict) -> str:
    m = study.get("metric") or {"name": "valid RMSE", "mode": "min"}
    return f"{m['name']} ({m['mode']})" if m.get("name") else "metric"


def show_study(study: dict, out) -> None:
    t = Table(title=f"scaling study · {study['provider']} · {study['data']}", title_justify="left")
    for col in (
        "workers",
        "CPUs",
        "runs",
        "wall s (median)",
        "speedup",
        "efficiency",
        "overhead/trial s",
        f"best {metric_label(study)}",
        "CPU busy",
    ):
        t.add_column(col, justify="right")
    for p in study["points"]:
        t.add_row(
            str(p["workers"]),
            f"{p['cpus']:g}",
            str(len(p["runs"]))
            + (f" ({p['disturbed_runs']} disturbed)" if p.get("disturbed_runs") else ""),
            f"{p['wall_s_median']:.2f}",
            f"{p['speedup']:.2f}x" + (" DISTURBED" if p.get("disturbed") else ""),
            f"{p['efficiency']:.0%}",
            f"{p['overhead_per_trial_s']:.3f}",
            f"{best:.4g}"
            if (best := p.get("best_metric", p.get("best_rmse"))) is not None
            else "-",
            f"{p['cpu_busy_avg']:.0%}" if p.get("cpu_busy_avg") is not None else "-",
        )
    console.print(t)
    if any(p.get("disturbed") for p in study["points"]):
        say(
            "DISTURBED points ran with retried trials or replaced workers in every run: "
            "their time is not a speedup to read (study.json: disturbed_by per run)"
        )
    for name, b in study["baselines"].items():
        extra = f" (n_jobs={b['n_jobs']})" if "n_jobs" in b else ""
        runs = len(b.get("runs") or [b])
        of = f" (median of {runs})" if runs > 1 else ""
        best = b.get("best_metric", b.get("best_rmse"))
        say(
            f"baseline {name}{extra}: wall {b['wall_s']:.2f} s{of}, best {metric_label(study)} {best:.4g}"
        )
    cal = study.get("calibration")
    if cal and (found := predict.joblib_factor(cal)):
        n, f = found  # the factor the replay model takes from it
        say(
            f"calibration (no joblib baseline asked for): {cal['configs']} configs, {n} at once "
            f"took {f:.2f}x as long each as one at a time"
        )
    w = study.get("workload") or {}
    if w.get("kind") == "script":
        say(
            "the points ran "
            + ("the same trial configs" if w["same_configs"] else "different trial configs")
            + f"; trial starts read from Tune's rows to within {w['start_uncertainty_s']:.2f} s"
        )
    f = study["fit"]
    if f.get("amdahl_serial_fraction") is not None:
        say(
            f"fit: Amdahl serial fraction {f['amdahl_serial_fraction']:.3f}; USL sigma "
            f"{f['usl_sigma']:.3f} kappa {f['usl_kappa']:.4f}; peak at {f['peak_workers']} workers"
        )
    pred = study.get("prediction")
    if pred:
        checks = ", ".join(
            f"{v['workers']} workers {v['predicted_wall_s']:.1f} s vs {v['measured_wall_s']:.1f} s "
            f"({v['error']:+.1%})"
            for v in pred["validation"]
        )
        say(f"replay model, each point predicted from the others: {checks or 'one point, none'}")
        say(
            "predicted: "
            + ", ".join(f"{q['workers']}w {q['wall_s']:.1f} s" for q in pred["points"])
        )
    say(f"wrote {out}/study.json, {out}/points.csv, {out}/scaling.png")


def show_bench(verdicts: dict) -> None:
    t = Table(title="rayscale bench: the figures", title_justify="left")
    for col in ("figure", "measured", "target", "met"):
        t.add_column(col)
    for k, v in verdicts.items():
        t.add_row(k, f"{v['value']:g}", v["target"], "yes" if v["met"] else "NO")
    console.print(t)


def show_plan(table: list[dict], summary: dict, written: list, as_json: bool) -> None:
    if as_json:
        print(json.dumps(table))
        return
    t = Table(
        title=f"plan · {summary['machine']} · {summary.get('scheduler', 'fifo').upper()}"
        f" · speed x{summary['speed']:g}"
        + (f" · prices of {summary['prices_read']}" if summary.get("prices_read") else ""),
        title_justify="left",
    )
    for col in (
        "workers",
        "search s",
        "p10-p90 s",
        "job s",
        "speedup",
        "efficiency",
        "cost USD",
        "",
    ):
        t.add_column(col, justify="right")
    for r in table:
        marks = []
        if r["cheapest_in_deadline"]:
            marks.append("cheapest" + (" in deadline" if summary.get("deadline_s") else ""))
        if r["knee"]:
            marks.append("knee")
        if r.get("driver_limited"):
            marks.append("driver-limited")
        t.add_row(
            str(r["workers"]),
            f"{r['wall_s']:.1f}",
            f"{r['wall_s_p10']:.0f}-{r['wall_s_p90']:.0f}",
            f"{r['total_s']:.1f}",
            f"{r['speedup']:.2f}x",
            f"{r['efficiency']:.0%}",
            f"{r['cost_usd']:.4f}",
            ", ".join(marks),
        )
    console.print(t)
    if summary.get("instances"):
        top = Table(
            title=f"the cheapest types within the deadline · prices of {summary['prices_read']}",
            title_justify="left",
        )
        for col in ("type", "region", "vCPUs", "USD/h", "workers", "job s", "cost USD"):
            top.add_column(col, justify="right" if col not in ("type", "region") else "left")
        for r in summary["instances"]:
            top.add_row(r["instance"], r["region"] or "-", f"{r['vcpus']:g}",
                        f"{r['price']:g}", str(r["workers"]), f"{r['total_s']:.1f}",
                        f"{r['cost_usd']:.4f}")  # fmt: skip
        console.print(top)
    if summary.get("deadline_s") and summary["cheapest_in_deadline"] is None:
        say(f"no worker count meets the deadline of {summary['deadline_s']:.0f} s")
    say(
        "knee: past it, doubling the workers cuts the time by less than 10 %. "
        "Predicted by replaying the study's trials (rayscale.predict); not measured."
    )
    cm = summary.get("cost_model")
    if cm:
        say(
            f"The {summary['num_samples']} configs the job draws, each priced by a cost model "
            f"fitted on the study's {cm['trials']} trials of {cm['configs']} configs (a config "
            f"left out of the fit: median error {cm['loo_error_median']:.0%}, p90 "
            f"{cm['loo_error_p90']:.0%}); p10-p90 over refits and residuals."
        )
    elif summary.get("trial_costs") == "resampled":
        say(
            f"{summary['num_samples']} trials drawn with replacement from the measured ones "
            "(the study's configs are not drawn in advance, or too few to fit a cost model)."
        )
    factors = summary.get("host_contention") or []
    if len(factors) > 1:
        k, f = factors[-1]
        how = {
            "points": "its trials at 1 and more at once on the study's one host",
            "calibration": "the study's calibration (the loop and joblib on its first configs)",
        }.get(summary.get("host_contention_from"), "the study's baselines on its host")
        say(
            f"Trials at once on one machine: each {f:.2f}x as long at {k:g} (measured by "
            f"{how}); assumed the same at more."
        )
    else:
        say(
            "Trials at once on one machine: not measured (the study ran no joblib baseline, "
            "nor its trials at 1 and more at once on one host); assumed to cost nothing, "
            "which flatters the plan where slots share a host."
        )
    ns = summary.get("node_start")
    if ns:
        where = (
            "its nodes sharing one machine, started a few at a time"
            if ns["one_host"]
            else "on its machines"
        )
        say(
            f"Adding nodes: {ns['s_per_node']:g} s per node in the study ({ns['provider']}, "
            f"{where}); not in the times above, which start with the cluster up."
        )
    d = summary.get("driver")
    if d:
        where = (
            f"it sets the time from {d['limits_from_workers']} workers (marked)"
            if d["limits_from_workers"]
            else f"its floor for this search is {d['floor_s']:g} s; the trials, not it, set "
            "the time at every count shown"
        )
        per_trial = (
            f"{d['events_per_trial']:g} a trial assumed (a start and a result; this study did "
            f"not measure them), the cost per event measured in {d['measured_in']}"
            if d.get("events_per_trial_assumed")
            else f"{d['events_per_trial']:g} a trial here"
        )
        say(
            f"Tune's driver: at most {d['events_per_s_max']:g} trial starts and results a "
            f"second ({d['cpu_s_per_event'] * 1000:.1f} ms of its CPU each), {per_trial}: "
            f"{where}."
        )
    else:
        say(
            "Tune's driver: not measured (the study has no driver figures: its provider "
            "cannot see the driver's process, or it predates them); no ceiling assumed."
        )
    for f in written:
        say(f"wrote {f}")


def show_sections(sections: list[tuple[str, str]]) -> None:
    """Titled blocks on stdout (a dry run's): `# title`, the text, a blank line."""
    for title, text in sections:
        print(f"# {title}\n{text.rstrip()}\n", flush=True)


@contextlib.contextmanager
def byte_progress(what: str) -> Iterator[Callable[[int, int], None]]:
    """update(done, total) in bytes: a bar on a terminal, else a line at each quarter."""
    if not sys.stderr.isatty():
        said = [0]

        def line(done: int, total: int) -> None:
            quarter = 4 * done // total if total else 0
            if quarter > said[0]:
                said[0] = quarter
                print(f"  {what}: {done / 2**20:.1f} of {total / 2**20:.1f} MiB",
                      file=sys.stderr, flush=True)  # fmt: skip

        yield line
        return
    bar = Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    with bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total or None)


def show_download(d: dict) -> None:
    best = d["best_checkpoint"]
    left = d["checkpoint_files_left"]
    say(
        f"downloaded {d['from']} to {d['path']}: {d['files']} files, "
        f"{d['bytes'] / 2**20:.1f} MiB"
        + (f"; best checkpoint {best}" if best else "; no checkpoint")
        + (f" ({left} files of other checkpoints left on the cluster)" if left else ""),
        err=True,
    )


def show_status(job_id: str, status: str, guess: dict | None, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"job_id": job_id, "status": status, "eta": guess}))
    elif guess is None:
        print(status)
    else:
        print(
            f"{status} · trials {guess['done']} done, {guess['running']} running, "
            f"{guess['pending']} pending · {eta.line(guess)}"
        )


def log_with_eta() -> Callable[[str], None]:
    """A followed log's line printer (`job logs --follow`, `job submit --working-dir`): each
    trial's end, in the bundled job's progress lines or in any Tune script's own output,
    followed by the ETA."""
    est, script = eta.Eta(), tune_console.TuneConsole()

    def on_line(line: str) -> None:
        print(line, flush=True)
        if line.startswith(eta.MARKER):
            rec = json.loads(line[len(eta.MARKER) :])
        elif (rec := script.feed(line)) is None:
            return
        est.add(rec)
        say(f"  {eta.line(est.estimate())}", err=True)

    return on_line
