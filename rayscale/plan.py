"""`rayscale plan`: from a measured study, the search's time and cost on N workers.

Per worker count: the replay model's predicted wall time (rayscale.predict), speedup and
efficiency against one worker, and the cost of the workers and the head for the job's
whole time. It marks the cheapest count that meets a deadline and the count past which
doubling the workers cuts the time by less than KNEE.
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from rayscale import job_files, predict, prices, replay
from rayscale.errors import UserError
from rayscale.jobs import flag_value
from rayscale.predict import scheduler_of

KNEE = 0.10  # doubling the workers must cut the time by at least this much to "pay"


@dataclass(frozen=True)
class Machine:
    cpus_per_worker: float | None  # None: as in the study
    price: float  # USD per worker-hour
    head_price: float  # USD per hour
    label: str
    workers_per_node: int = 1  # workers sharing one machine (a Kubernetes node, a VM)


def machine(
    instance: str | None,
    cpus_per_worker: float | None,
    price: float | None,
    head_price: float | None,
    workers_per_node: int = 1,
    catalog: prices.Catalog | None = None,
    region: str | None = None,
) -> Machine:
    if (price is not None and price < 0) or (head_price is not None and head_price < 0):
        raise UserError("a price cannot be negative", "pass --price / --head-price in USD per hour")
    if workers_per_node < 1:
        raise UserError(
            "--workers-per-node must be at least 1", "1: every worker on a machine of its own"
        )
    if instance:
        offer = (catalog or prices.builtin()).offer(instance, region)
        p = offer.price if price is None else price
        head = p if head_price is None else head_price
        label = f"{instance} ({offer.region})" if offer.region else instance
        return Machine(offer.vcpus, p, head, label, workers_per_node)
    return Machine(
        cpus_per_worker, price or 0.0, head_price or 0.0, "as measured", workers_per_node
    )


def deadline_s(text: str | None) -> float | None:
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"bad --deadline {text!r}", "pass e.g. 90s, 10m or 1.5h")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def load_study(path: Path) -> dict:
    try:
        study = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot read the study {path} ({type(e).__name__})",
            "pass a study.json that rayscale scaling wrote",
        ) from None
    if not predict.replayable(study.get("points") or []):
        raise UserError(
            f"the study {path} has no trial records to replay",
            "run the study again with this version of rayscale (`rayscale scaling`)",
        )
    return study


def scheduler(study: dict, path: Path, asked: str | None) -> replay.Asha | None:
    """ASHA as the study's job would run it, where asked for or where the study ran ASHA."""
    job_args = study.get("job_args") or []
    if (asked or scheduler_of(job_args) or "fifo") != "asha":
        return None
    if not predict.has_marks(study["points"]):
        raise UserError(
            f"the trials in {path} noted nothing at ASHA's rungs, so ASHA cannot be replayed",
            "run the study again with this version of rayscale, or plan with --scheduler fifo",
        )
    return predict.asha_of(job_args)


def rows(
    study: dict,
    workers: list[int],
    m: Machine,
    num_samples: int | None = None,
    speed: float = 1.0,
    asha: replay.Asha | None = None,
    host: replay.Host | None = None,
    search: predict.Search | None = None,
    driver: replay.Driver | None = None,
) -> list[dict]:
    if any(n < 1 for n in workers):
        raise UserError("--workers must all be at least 1", "pass e.g. --workers 1,2,4,8")
    if num_samples is not None and num_samples < 1:
        raise UserError("--num-samples must be at least 1")
    if speed <= 0:
        raise UserError(
            "--speed must be positive", "1.0: the instance's cores are as fast as the study's"
        )
    points = predict.replayable(study["points"])
    host = host or predict.host_of(study)
    out = []
    for n in sorted(set(workers)):
        r = predict.at(points, n, m.cpus_per_worker, num_samples, speed, asha, host, search, driver,
                       m.workers_per_node)  # fmt: skip
        hours = r["total_s"] / 3600
        out.append(
            {
                "workers": n,
                "wall_s": round(r["wall_s"], 1),
                "wall_s_p10": round(r["wall_s_p10"], 1),
                "wall_s_p90": round(r["wall_s_p90"], 1),
                "total_s": round(r["total_s"], 1),
                "cost_usd": round((n * m.price + m.head_price) * hours, 4),
                # Tune's driver, not the trials, sets the search's time at this count.
                "driver_limited": r["driver_floor_s"] >= r["wall_s"] - 1e-9,
                "driver_floor_s": round(r["driver_floor_s"], 1),
            }
        )
    one = next((r for r in out if r["workers"] == 1), None)
    base = one["wall_s"] if one else out[0]["wall_s"] * out[0]["workers"]
    for r in out:
        r["speedup"] = round(base / r["wall_s"], 2)
        r["efficiency"] = round(r["speedup"] / r["workers"], 3)
    return out


def mark(table: list[dict], deadline: float | None) -> dict:
    """The cheapest row within the deadline, and the knee (past it, more workers do not pay)."""
    meets = [r for r in table if deadline is None or r["total_s"] <= deadline]
    cheapest = min(meets, key=lambda r: (r["cost_usd"], r["total_s"]))["workers"] if meets else None
    knee = table[-1]["workers"]
    for a in table:
        double = next((b for b in table if b["workers"] >= 2 * a["workers"]), None)
        if double and (a["wall_s"] - double["wall_s"]) / a["wall_s"] < KNEE:
            knee = a["workers"]
            break
    for r in table:
        r["cheapest_in_deadline"] = r["workers"] == cheapest
        r["knee"] = r["workers"] == knee
    return {"cheapest_in_deadline": cheapest, "knee": knee}


def priced_search(
    study: dict, num_samples: int | None, host: replay.Host
) -> tuple[predict.Search | None, str, dict | None]:
    """A search of another size than the study's, priced by the cost model; how its trials
    are priced: "measured" (the study's size), "cost model", or "resampled" (the measured
    trials drawn with replacement, where the configs are not drawn in advance or too few
    were measured to fit); and the cost model's check (predict.cost_model_check)."""
    points = predict.replayable(study["points"])
    draws = [t.get("draw") for p in points for r in p["runs"] for t in r.get("timeline") or ()]
    if not num_samples or (draws and num_samples == 1 + max(d or 0 for d in draws)):
        return None, "measured", None
    if not draws or any(d is None for d in draws):  # an adaptive search's configs
        return None, "resampled", None
    drawn = job_files.drawn_configs(study.get("job_args") or [], max(num_samples, 1 + max(draws)))
    search = predict.search_of(points, host, drawn, num_samples)
    if search is None:
        return None, "resampled", None
    return search, "cost model", predict.cost_model_check(list(search.rows))


def make(
    study_path: Path,
    workers: list[int],
    instance: str | None,
    cpus_per_worker: float | None,
    price: float | None,
    head_price: float | None,
    num_samples: int | None,
    speed: float,
    deadline: str | None,
    scheduler_name: str | None = None,
    driver_from: Path | None = None,
    workers_per_node: int = 1,
    prices_path: Path | None = None,
    region: str | None = None,
) -> tuple[list[dict], dict]:
    """`rayscale plan`: (the rows, the summary plan.json carries beside them)."""
    study = load_study(study_path)
    catalog = prices.read(prices_path) if prices_path else prices.builtin()
    limit = deadline_s(deadline)
    asha = scheduler(study, study_path, scheduler_name)
    host = predict.host_of(study)
    search, priced, check = priced_search(study, num_samples, host)
    driver, driver_src = driver_for(study, study_path, driver_from)
    ranked = None
    if instance == "cheapest":
        if price is not None:
            raise UserError(
                "--price prices one type; `cheapest` compares the catalog's", "drop --price"
            )

        def table_for(cpus: float) -> list[dict]:
            m = Machine(cpus, 1.0, 0.0, "", workers_per_node)
            return rows(study, workers, m, num_samples, speed, asha, host, search, driver)

        ranked = cheapest(study, catalog, region, head_price, limit, table_for)
        instance, region = ranked[0]["instance"], ranked[0]["region"] or region
    m = machine(instance, cpus_per_worker, price, head_price, workers_per_node, catalog, region)
    table = rows(study, workers, m, num_samples, speed, asha, host, search, driver)
    summary = {
        "study": str(study_path),
        "machine": m.label,
        "workers_per_node": m.workers_per_node,
        "scheduler": "asha" if asha else "fifo",
        # Trials at once on one machine slow each other by these factors (measured on the
        # study's host by its baselines; past the last count measured, the last holds).
        "host_contention": [list(f) for f in host.factors],
        "host_contention_from": contention_source(study, host),
        "prices_read": catalog.read if instance else None,
        "instances": ranked[:TOP] if ranked else None,
        "speed": speed,
        "num_samples": num_samples,
        "trial_costs": priced,
        "cost_model": check,
        "node_start": node_start(study),
        "driver": driver_summary(driver, table, driver_src, driver_src != str(study_path)),
        "deadline_s": limit,
        **mark(table, limit),
    }
    return table, summary


TOP = 5  # `--instance cheapest` shows this many types


def cheapest(study, catalog, region, head_price, limit, table_for) -> list[dict]:
    """Every type of the catalog with the cores a trial needs, at its cheapest worker count
    within the deadline, cheapest first. The replay depends on a type's cores only: it runs
    once per core count, and each type's prices are applied to its hours."""
    per_trial = max((p.get("cpus_per_trial") or 1.0) for p in study["points"])
    memory = flag_value(study.get("job_args") or [], "--memory-per-trial")
    tables: dict[float, list[dict]] = {}
    ranked = []
    for o in catalog.cpu_types(region):
        slots = int(o.vcpus // per_trial)
        if slots < 1 or (memory and slots * float(memory) > o.memory_gib):
            continue
        if o.vcpus not in tables:
            tables[o.vcpus] = table_for(o.vcpus)
        head = o.price if head_price is None else head_price
        costed = [
            {**r, "cost_usd": round((r["workers"] * o.price + head) * r["total_s"] / 3600, 4)}
            for r in tables[o.vcpus]
        ]
        meets = [r for r in costed if limit is None or r["total_s"] <= limit]
        if meets:
            best = min(meets, key=lambda r: (r["cost_usd"], r["total_s"]))
            ranked.append(
                {"instance": o.instance, "region": o.region, "vcpus": o.vcpus,
                 "memory_gib": o.memory_gib, "price": o.price, "workers": best["workers"],
                 "total_s": best["total_s"], "cost_usd": best["cost_usd"]}
            )  # fmt: skip
    if not ranked:
        raise UserError(
            f"no instance type in {catalog.read}"
            + (f" in region {region}" if region else "")
            + " runs a trial of the study's size"
            + (" within the deadline" if limit else ""),
            "raise --deadline, add --workers counts, or pass a catalog with larger types",
        )
    return sorted(ranked, key=lambda r: (r["cost_usd"], r["total_s"], r["instance"]))


def node_start(study: dict) -> dict | None:
    """Seconds per worker node the study's provider took to add (its resizes between
    points), where the study recorded them."""
    steps = [
        r["resize"]["s"] / (p["workers"] - r["resize"]["from"])
        for p in study["points"]
        for r in p.get("runs", [])
        if (r.get("resize") or {}).get("from", p["workers"]) < p["workers"]
    ]
    if not steps:
        return None
    return {
        "s_per_node": round(statistics.median(steps), 2),
        "provider": study.get("provider"),
        "one_host": bool(study.get("one_machine", study.get("provider") in predict.ONE_HOST)),
    }


def contention_source(study: dict, host: replay.Host) -> str | None:
    if len(host.factors) < 2:
        return None
    if host.from_points:
        return "points"
    return "baselines" if predict.joblib_factor(study.get("baselines") or {}) else "calibration"


# A trial is at least a start and a final result through the driver.
MIN_EVENTS_PER_TRIAL = 2.0


def driver_for(
    study: dict, study_path: Path, driver_from: Path | None
) -> tuple[replay.Driver, str | None]:
    """Tune's driver as the study measured it, else as DRIVER_FROM's study did (its cost
    per event; the events per trial stay this workload's, at least a start and a result)."""
    own = replay.driver_of(predict.replayable(study["points"]))
    if own.capacity is not None or driver_from is None:
        return own, str(study_path) if own.capacity is not None else None
    other = replay.driver_of(predict.replayable(load_study(driver_from)["points"]))
    if other.capacity is None:
        raise UserError(
            f"{driver_from} has no measurements of Tune's driver",
            "pass a study run on the local provider by this version, e.g. `make scale`'s",
        )
    return dataclasses.replace(other, events_per_trial=MIN_EVENTS_PER_TRIAL), str(driver_from)


def driver_summary(
    d: replay.Driver, table: list[dict], source: str | None, borrowed: bool = False
) -> dict | None:
    """What the plan assumed of Tune's driver, and the first count where it limits."""
    if d.capacity is None:
        return None
    limited = [r["workers"] for r in table if r["driver_limited"]]
    return {
        "measured_in": source,
        # Another study's driver: this workload's events per trial are assumed, the fewest.
        "events_per_trial_assumed": borrowed,
        "cpu_s_per_event": round(d.per_event, 5),
        "idle_cores": round(d.idle, 3),
        "events_per_s_max": round(d.capacity, 1),
        "events_per_trial": round(d.events_per_trial, 2),
        "limits_from_workers": limited[0] if limited else None,
        "floor_s": table[0]["driver_floor_s"],
    }


def write(table: list[dict], summary: dict, out: Path) -> list[Path]:
    import csv

    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps({**summary, "rows": table}, indent=2))
    with open(out / "plan.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    written = [out / "plan.json", out / "plan.csv"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written  # the plot needs the study extra; the numbers do not
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    n = [r["workers"] for r in table]
    ax[0].plot(n, [r["total_s"] for r in table], "o-")
    ax[0].fill_between(
        n, [r["wall_s_p10"] for r in table], [r["wall_s_p90"] for r in table], alpha=0.2
    )
    ax[0].set(xscale="log", title="predicted job time", xlabel="workers", ylabel="seconds")
    ax[1].plot(n, [r["cost_usd"] for r in table], "o-", color="C1")
    ax[1].set(xscale="log", title="cost (workers + head)", xlabel="workers", ylabel="USD")
    fig.tight_layout()
    fig.savefig(out / "plan.png", dpi=110)
    plt.close(fig)
    return [*written, out / "plan.png"]
