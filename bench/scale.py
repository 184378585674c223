"""`make scale`: what the orchestration costs as local worker nodes grow to 16.

For each worker count N (local provider, one-CPU workers): a cluster brought up from
nothing (seconds, and seconds per node added by `scale` from the count before), its idle
CPU and resident memory per node, submit -> RUNNING (the same on the docker provider to 8
containers, where the image is built); then `cluster up` and `scale 1 -> max`
repeated (do they succeed every time); then the sleep study (examples/sleep_search.py,
trials that wait instead of computing) at every N through `rayscale scaling`'s own-script
path, each trial process's start and the Tune driver's throughput read from its timeline.
Writes <out>/scale.json, <out>/scale.png and the study's files under <out>/study.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench import bench
from rayscale import jobs, predict, procs, replay, report, scaling
from rayscale.errors import UserError
from rayscale.providers.base import NodeShape
from rayscale.providers.docker import DockerProvider, docker_binary
from rayscale.providers.local import LocalProvider
from rayscale.state import StateDir
from rayscale.study import measure
from rayscale.study import plan as study_plan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import sleep_search  # noqa: E402  (the lengths its trials draw: the ideal schedule's input)

ALL = {"nodes", "docker", "repeat", "study"}
DOCKER_COUNTS = [1, 2, 4, 8]


def node_pss_mib(p: LocalProvider) -> dict[str, float]:
    """Each node's process tree's proportional set size (the nodes' figures add up to what
    the machine gives them)."""
    return {
        node: round(procs.rss_bytes(list(per_pid), pss=True) / 2**20, 1)
        for node, per_pid in p.node_cpu_seconds().items()
    }


def idle_cpu(p: LocalProvider, seconds: float) -> dict[str, float]:
    with measure.CpuSampler(p) as cpu:
        time.sleep(seconds)
    return cpu.busy()


def submit_to_running(j: jobs.Jobs, tries: int) -> list[float]:
    probe = ["python -c pass"]
    return bench.time_to_running(
        j, lambda: j.submit_command(probe, metadata={"rayscale": "scale probe"}), tries
    )


def ideal_s(lengths: list[float], slots: int) -> float:
    """The search with no orchestration at all: trials in Tune's order, each to the first
    free slot, every start and result free."""
    free = [0.0] * slots
    for x in lengths:
        i = free.index(min(free))
        free[i] += x
    return max(free)


def timed(fn, *args) -> tuple[float, bool, str]:
    t0 = time.perf_counter()
    try:
        fn(*args)
        return round(time.perf_counter() - t0, 2), True, ""
    except Exception as e:  # a failed start is a result here, counted and said
        return round(time.perf_counter() - t0, 2), False, str(e).splitlines()[0][:300]


def local_idle(p: LocalProvider) -> tuple[dict, dict]:
    """Each node's idle CPU (cores, over 10 s) and PSS (MiB)."""
    return idle_cpu(p, 10), node_pss_mib(p)


def docker_idle(p) -> tuple[dict, dict]:
    """Each container's CPU (cores) and memory (its cgroup's, MiB) as `docker stats` sees
    them over its sampling window (rayscale's docker provider sees no processes)."""
    rec = p.state.read()
    names = {rec["head"]["name"]: "head", **{w["name"]: f"w{w['index']}" for w in rec["workers"]}}
    out = subprocess.run(
        [docker_binary(), "stats", "--no-stream", "--format",
         "{{.Name}} {{.CPUPerc}} {{.MemUsage}}", *names],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    cpu, mem = {}, {}
    for line in out.splitlines():
        name, perc, used, *_ = line.split()
        cpu[names[name]] = round(float(perc.rstrip("%")) / 100, 3)
        num = float(re.match(r"[\d.]+", used).group())
        mem[names[name]] = round(
            num * {"GiB": 1024, "MiB": 1, "KiB": 1 / 1024}[used.lstrip("0123456789.")], 1
        )
    return cpu, mem


def nodes_phase(p, state: StateDir, counts: list[int], say, idle=local_idle) -> list[dict]:
    rows = []
    for n in counts:
        with state.lock():
            up_s, ok, why = timed(p.up, n)
        if not ok:
            say(f"  {n} workers: up FAILED after {up_s} s: {why}")
            rows.append({"workers": n, "up_s": up_s, "up_ok": False, "error": why})
            with state.lock():
                p.down()
            continue
        time.sleep(5)  # start-up settles before idle is measured
        cpu, mem = idle(p)
        row = {
            "workers": n,
            "up_s": up_s,
            "up_ok": True,
            "idle_cpu": cpu,
            "pss_mib": mem,
            "submit_to_running_s": submit_to_running(jobs.Jobs(p.endpoint()), 3),
        }
        row["idle_cpu_cluster"] = round(sum(row["idle_cpu"].values()), 3)
        row["pss_worker_mib_median"] = round(
            statistics.median(v for k, v in row["pss_mib"].items() if k != "head"), 1
        )
        say(
            f"  {n} workers: up {up_s} s, idle {row['idle_cpu_cluster']} cores, "
            f"worker memory {row['pss_worker_mib_median']} MiB, head {row['pss_mib']['head']} MiB, "
            f"submit->RUNNING {statistics.median(row['submit_to_running_s'])} s"
        )
        rows.append(row)
        with state.lock():
            p.down()
    # Adding nodes to a running cluster: from each count to the next.
    with state.lock():
        p.up(counts[0])
        for prev, n in zip(counts, counts[1:], strict=False):
            s, ok, why = timed(p.scale, n)
            row = next(r for r in rows if r["workers"] == n)
            row.update(
                scale_from=prev, scale_s=s, scale_ok=ok, scale_s_per_node=round(s / (n - prev), 2)
            )
            if why:
                row["scale_error"] = why
            say(
                f"  scale {prev} -> {n}: {s} s ({row['scale_s_per_node']} s per node){'' if ok else ': ' + why}"
            )
        p.down()
    return rows


def repeat_phase(p: LocalProvider, state: StateDir, n: int, times: int, say) -> dict:
    """`cluster up --workers n` and `cluster scale 1 -> n`, each `times` times."""
    out = {"workers": n, "up": [], "scale_from_1": []}
    for i in range(times):
        with state.lock():
            s, ok, why = timed(p.up, n)
            out["up"].append({"s": s, "ok": ok, **({"error": why} if why else {})})
            p.down()
        with state.lock():
            p.up(1)
            s2, ok2, why2 = timed(p.scale, n)
            out["scale_from_1"].append({"s": s2, "ok": ok2, **({"error": why2} if why2 else {})})
            p.down()
        say(
            f"  try {i + 1}/{times}: up {n} {s} s {'ok' if ok else why}; scale 1 -> {n} {s2} s {'ok' if ok2 else why2}"
        )
    out["up_ok"] = f"{sum(x['ok'] for x in out['up'])}/{times}"
    out["scale_ok"] = f"{sum(x['ok'] for x in out['scale_from_1'])}/{times}"
    return out


def trial_starts(run: dict) -> list[float]:
    """Each trial process's first trial: when it entered the trainable, in the search window
    (the search's clock starts with the first trial's start, so the first is 0)."""
    first = defaultdict(lambda: float("inf"))
    for t in run["timeline"]:
        first[t["proc"]] = min(first[t["proc"]], t["start"])
    return sorted(first.values())


def study_phase(p, state, out: Path, counts, args: list[str], lengths, say) -> tuple[dict, list]:
    plan = study_plan.StudyPlan(
        counts, 1, [], ["python", "sleep_search.py", *args], working_dir=str(EXAMPLES)
    )
    with state.lock():
        p.up(counts[0])
    try:
        study = scaling.run(p, scaling.Progress(out / "study", p.name, plan), say)
    finally:
        with state.lock():
            p.down()
    rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 4
    rows = []
    for point in study["points"]:
        run = point["runs"][0]
        n, wall = point["workers"], run["wall_s"]
        ideal = ideal_s(lengths, n)
        starts = trial_starts(run)
        rows.append(
            {
                "workers": n,
                "search_s": wall,
                "ideal_s": round(ideal, 3),
                "efficiency": round(ideal / wall, 3),
                "job_s": run["job_total_s"],
                "submit_to_result_s": run["submit_to_result_s"],
                "trial_processes": len(starts),
                # When the last slot's first trial began: every process started by then.
                "last_process_first_trial_s": round(starts[-1], 3) if starts else None,
                "trials_per_s": round(run["trials_completed"] / wall, 3),
                "results_per_s": round(run["trials_completed"] * rounds / wall, 2),
                # The head runs the Tune driver (the job's entrypoint) and Ray's head daemons.
                "head_cpu": run["cpu_busy_by_node"].get("head"),
                # The driver's own process: its CPU per trial start or result, and its load.
                "driver": run.get("driver"),
                "workers_cpu": round(
                    sum(v for k, v in run["cpu_busy_by_node"].items() if k != "head"), 3
                ),
            }
        )
        say(
            f"  sleep study {n} workers: {wall} s against {ideal:.1f} s ideal ({rows[-1]['efficiency']})"
        )
    return study, rows


def attribution(study: dict, n: int, lengths: list[float]) -> dict:
    """Where the replay model puts the time the search at N workers took beyond the ideal
    (its trials' sleeps, each to the first free slot): the trials' own overhead (their
    reports), the gaps between trials on one process, the trial processes queueing to start
    on the one machine, the tail, and the driver's floor against the trials' schedule."""
    points = predict.replayable(study["points"])
    host = predict.host_of(study)
    c = predict.point_costs(points, n, host)
    costs = [t.cost for t in c.trials]
    free = replay.makespan(costs, n, 0.0, 0.0)
    gaps = replay.makespan(costs, n, 0.0, c.gap)
    first = replay.makespan(costs, n, c.startup, c.gap)
    queued, driver = replay.bounds(c, n, None, hosts=1)
    point = next(p for p in points if p["workers"] == n)
    ideal = ideal_s(lengths, n)
    out = {
        "workers": n,
        "measured_s": point["wall_s_median"],
        "ideal_s": round(ideal, 3),
        "trial_overhead_s": round(free - ideal, 3),
        "gaps_s": round(gaps - free, 3),
        "first_process_start_s": round(first - gaps, 3),
        "start_queue_s": round(queued - first, 3),
        "tail_s": round(c.tail, 3),
        "driver_floor_s": round(driver, 3),
        "driver_limits": driver > queued,
        "per_process_start_s": round(c.per_proc, 4),
        "driver_cpu_s_per_event": round(c.driver.per_event, 5),
        "driver_events_per_s_max": round(c.driver.capacity or 0, 1),
    }
    out["unexplained_s"] = round(out["measured_s"] - max(queued, driver) - c.tail, 3)
    return out


def twin(a, x, left: tuple, right: tuple) -> None:
    """A panel with a second y axis on the right: (ys, label, legend place), (ys, label)."""
    a.plot(x, left[0], "o-", label=left[1])
    b = a.twinx()
    b.plot(x, right[0], "s--", color="C3", label=right[1])
    a.legend(loc=left[2])
    b.legend(loc="upper right" if left[2] != "upper right" else "lower right")


def plot(scale: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [r for r in scale["nodes"] if r.get("up_ok")]
    search = scale["sleep_study"]
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    n = [r["workers"] for r in nodes]
    ax[0][0].plot(n, [r["up_s"] for r in nodes], "o-", label="cluster up (head + N)")
    sc = [r for r in nodes if "scale_s_per_node" in r]
    ax[0][0].plot(
        [r["workers"] for r in sc],
        [r["scale_s_per_node"] for r in sc],
        "s-",
        label="scale: s per node added",
    )
    ax[0][0].plot(
        n,
        [statistics.median(r["submit_to_running_s"]) for r in nodes],
        "^-",
        label="submit -> RUNNING",
    )
    dock = [r for r in scale.get("docker_nodes") or [] if isinstance(r, dict) and r.get("up_ok")]
    if dock:
        ax[0][0].plot(
            [r["workers"] for r in dock],
            [r["up_s"] for r in dock],
            "o--",
            label="docker: cluster up",
        )
    ax[0][0].set_title("bringing up and submitting")
    ax[0][0].set_ylabel("seconds")
    m = [r["workers"] for r in search]
    predicted = {v["workers"]: v["predicted_wall_s"] for v in scale["prediction_validation"]}
    ax[0][1].plot(
        m, [r["ideal_s"] / predicted[r["workers"]] for r in search], "x:", color="C2",
        label="replayed, each count from the others",
    )  # fmt: skip
    twin(
        ax[0][1], m,
        ([r["efficiency"] for r in search], "efficiency (ideal / measured)", "lower left"),
        ([r["last_process_first_trial_s"] for r in search], "last process's first trial (s)"),
    )  # fmt: skip
    ax[0][1].set_ylim(0, 1.05)
    ax[0][1].set_title("sleep search: efficiency and trial-process start")
    cap = scale.get("attribution", {}).get("driver_events_per_s_max")
    twin(
        ax[1][0], m,
        ([r["results_per_s"] for r in search], "results handled / s", "upper left"),
        ([(r.get("driver") or {}).get("cpu_cores") for r in search], "driver process, cores"),
    )  # fmt: skip
    ax[1][0].set_title(
        "Tune driver" + (f": at most {cap:g} starts + results / s on one core" if cap else "")
    )
    ax[1][1].plot(n, [r["pss_mib"]["head"] for r in nodes], "s-", label="head PSS, MiB")
    twin(
        ax[1][1], n,
        ([r["pss_worker_mib_median"] for r in nodes], "worker node PSS, MiB", "upper left"),
        ([r["idle_cpu_cluster"] for r in nodes], "idle cluster CPU, cores"),
    )  # fmt: skip
    ax[1][1].set_title("idle cost")
    ax[0][0].legend()
    for a in ax.flat:
        a.set_xscale("log", base=2)
        a.set_xlabel("worker nodes")
    fig.suptitle(
        f"make scale · local provider · {scale['machine']['cpus']} cores · {scale['created']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def markdown(head: list[str], rows: list[list]) -> str:
    """A markdown table, floats to two decimals as the docs quote them."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cells in rows:
        shown = [f"{round(c, 2):g}" if isinstance(c, float) else str(c) for c in cells]
        lines.append("| " + " | ".join(shown) + " |")
    return "\n".join(lines)


def _node_cells(r: dict) -> list:
    """A nodes-phase row's first cells: count, up, scale per node, submit, idle, memory."""
    return [
        r["workers"],
        r["up_s"] if r.get("up_ok") else "failed",
        r.get("scale_s_per_node", "-"),
        statistics.median(r["submit_to_running_s"]) if r.get("up_ok") else "-",
        r.get("idle_cpu_cluster", "-"),
        r.get("pss_worker_mib_median", "-"),
    ]


def table(scale: dict) -> str:
    """The markdown table docs/scaling.md quotes (tests/test_docs_figures.py checks it)."""
    study = {r["workers"]: r for r in scale["sleep_study"]}
    errors = {v["workers"]: v["error"] for v in scale.get("prediction_validation") or []}
    head = [
        "workers", "up s", "scale s / node", "submit -> RUNNING s", "idle cores",
        "worker PSS MiB", "sleep search s", "ideal s", "efficiency",
        "last process starts s", "results / s", "driver cores", "replay error",
    ]  # fmt: skip
    rows = []
    for r in scale["nodes"]:
        n, st = r["workers"], study.get(r["workers"], {})
        rows.append(
            _node_cells(r)
            + [
                st.get("search_s", "-"),
                st.get("ideal_s", "-"),
                st.get("efficiency", "-"),
                st.get("last_process_first_trial_s", "-"),
                st.get("results_per_s", "-"),
                (st.get("driver") or {}).get("cpu_cores", "-"),
                f"{errors[n]:+.1%}" if n in errors else "-",
            ]
        )
    return markdown(head, rows)


def docker_table(scale: dict) -> str:
    """The docker provider's rows in docs/scaling.md (tests/test_docs_figures.py)."""
    head = ["containers", "up s", "scale s / node", "submit -> RUNNING s", "idle cores",
            "worker memory MiB (cgroup)"]  # fmt: skip
    return markdown(head, [_node_cells(r) for r in scale["docker_nodes"]])


def summary(scale: dict) -> str:
    """The README's line on make scale (tests/test_docs_figures.py checks it)."""
    rep, study = scale["repeated"], scale["sleep_study"]
    last = study[-1]
    worst = max(abs(v["error"]) for v in scale["prediction_validation"])
    return (
        f"`cluster up --workers {rep['workers']}` {rep['up_ok']} and `scale 1 -> "
        f"{rep['workers']}` {rep['scale_ok']}; the sleep search at {last['workers']} workers "
        f"{last['efficiency']:.0%} of the ideal, the replay model within {worst:.1%} at every "
        f"count ({scale['created'][:10]})"
    )


def repeat_text(scale: dict) -> str:
    """docs/scaling.md's line on the repeated ups and scales (tests/test_docs_figures.py)."""
    rep = scale["repeated"]
    times = [", ".join(f"{x['s']:g}" for x in rep[k]) for k in ("up", "scale_from_1")]
    return (
        f"`cluster up --workers {rep['workers']}` succeeded {rep['up_ok']} ({times[0]} s) and "
        f"`scale 1 -> {rep['workers']}` {rep['scale_ok']} ({times[1]} s)"
    )


def attribution_text(scale: dict) -> str:
    """docs/scaling.md's account of the largest count (tests/test_docs_figures.py checks it)."""
    a = scale["attribution"]
    v = {x["workers"]: x for x in scale["prediction_validation"]}[a["workers"]]
    return (
        f"At {a['workers']} workers the search took {a['measured_s']:g} s against "
        f"{a['ideal_s']:g} s with free orchestration. The model, fitted on this study, puts "
        f"{a['start_queue_s']:g} s on trial processes queueing to start on the one machine "
        f"({a['per_process_start_s']:g} s for each process ahead), {a['gaps_s']:g} s on the "
        f"gaps between trials on a process and {a['trial_overhead_s']:g} s on the trials' "
        f"own reports; {a['unexplained_s']:g} s it does not explain. Tune's driver spent "
        f"{a['driver_cpu_s_per_event'] * 1000:.1f} ms of CPU per trial start or result: at "
        f"most {a['driver_events_per_s_max']:g} a second on one core, a floor of "
        f"{a['driver_floor_s']:g} s for this search's events, "
        + ("over" if a["driver_limits"] else "under")
        + f" the trials' schedule, so it {'limits' if a['driver_limits'] else 'does not limit'}"
        f" at {a['workers']}. Predicted "
        f"from the other counts alone, {a['workers']} workers take "
        f"{v['predicted_wall_s']:g} s ({v['error']:+.1%})."
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/scale")
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--repeats", type=int, default=3, help="ups and scales at the largest count")
    ap.add_argument("--memory-per-worker", type=float, default=0.5)
    ap.add_argument("--search", default="--num-samples 64 --mean-s 2 --rounds 4 --seed 0")
    ap.add_argument(
        "--phases",
        default=",".join(sorted(ALL)),
        help="run only these, keeping the others' figures from <out>/scale.json; "
        "`render` runs nothing and re-derives the model's figures and the plot from the files",
    )
    a = ap.parse_args(argv)
    phases = set(a.phases.split(","))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = sorted(int(x) for x in a.workers.split(","))
    state = StateDir(str(out / ".state"))
    p = LocalProvider(state, NodeShape.sized(1, a.memory_per_worker))
    if p.is_running():
        p.down()
    search = a.search.split()
    opts = dict(zip(search[::2], search[1::2], strict=False))
    lengths = sleep_search.lengths(
        int(opts["--num-samples"]), float(opts["--mean-s"]), 0.5, int(opts["--seed"])
    )
    say = report.say
    kept = out / "scale.json"
    scale: dict = json.loads(kept.read_text()) if phases != ALL and kept.exists() else {}
    command = "python -m bench.scale " + " ".join(argv if argv is not None else sys.argv[1:])
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if phases == {"render"}:
        scale["rendered"] = {"at": now, "command": command}
    else:
        if scale and "phase_runs" not in scale:  # a file from a run of every phase
            scale["phase_runs"] = dict.fromkeys(sorted(ALL - phases), scale.get("created"))
        scale.update(
            {
                "command": command,
                "created": now,
                "machine": measure.machine(),
                "memory_per_worker_gib": a.memory_per_worker,
                "search": a.search,
            }
        )
        # Each phase's own run: a later --phases run replaces only what it measured.
        scale.setdefault("phase_runs", {}).update(dict.fromkeys(sorted(phases), now))
    if "nodes" in phases:
        say("nodes: up, idle, submit, scale")
        scale["nodes"] = nodes_phase(p, state, counts, say)
    if "docker" in phases:
        say("docker nodes: up, idle, submit, scale")
        dstate = StateDir(str(out / ".state-docker"))
        dp = DockerProvider(dstate, NodeShape.sized(1, a.memory_per_worker))
        try:
            if dp.is_running():
                dp.down()
            scale["docker_nodes"] = nodes_phase(dp, dstate, DOCKER_COUNTS, say, docker_idle)
        except UserError as e:  # no Docker engine or no image here: the local phases still run
            say(f"  docker phase skipped: {e}")
            scale["docker_nodes"] = {"skipped": str(e)}
    if "repeat" in phases:
        say(f"cluster up and scale 1 -> {counts[-1]}, {a.repeats} times")
        scale["repeated"] = repeat_phase(p, state, counts[-1], a.repeats, say)
    if "study" in phases:
        say("the sleep study")
        study, scale["sleep_study"] = study_phase(p, state, out, counts, search, lengths, say)
    if "study" in phases or "render" in phases:
        study = json.loads((out / "study" / "study.json").read_text())
        pts = predict.replayable(study["points"])
        scale["prediction_validation"] = predict.validation(pts, None, predict.host_of(study))
        scale["attribution"] = attribution(study, counts[-1], lengths)
    (out / "scale.json").write_text(json.dumps(scale, indent=1))
    plot(scale, out / "scale.png")
    say(f"wrote {out / 'scale.json'} and {out / 'scale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
