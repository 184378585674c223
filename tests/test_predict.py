"""The replay model (rayscale.predict) on cases with known answers, and `rayscale plan`."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, run_cli

from rayscale import predict


def test_equal_trials_fill_the_slots_in_waves():
    # 8 trials of 10 s on 4 slots: two waves; the second pays the gap between trials.
    assert predict.makespan([10.0] * 8, 4, startup=2.0, gap=0.5) == pytest.approx(22.5)
    # More slots than trials: one wave, no gap.
    assert predict.makespan([10.0] * 3, 8, startup=2.0, gap=0.5) == pytest.approx(12.0)


def test_one_long_trial_bounds_the_search():
    trials = [100.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    for slots in (2, 4, 64):
        assert predict.makespan(trials, slots, startup=3.0, gap=0.0) == pytest.approx(103.0)
    # One slot: everything in a row.
    assert predict.makespan(trials, 1, startup=3.0, gap=0.1) == pytest.approx(3 + 105 + 0.5)


def test_fifo_keeps_the_jobs_order():
    # Longest last on 2 slots: the long trial waits for a free slot (list scheduling).
    assert predict.makespan([1.0, 1.0, 1.0, 10.0], 2, 0.0, 0.0) == pytest.approx(11.0)
    assert predict.makespan([10.0, 1.0, 1.0, 1.0], 2, 0.0, 0.0) == pytest.approx(10.0)


def _run(workers: int, trials: list[float], startup=2.0, gap=0.1, tail=0.5, fixed=5.0) -> dict:
    """A run as the study records it, made by the model itself from known costs."""
    slots = workers
    free = [(startup, i, True) for i in range(slots)]
    timeline = []
    for cost in trials:
        free.sort()
        at, i, fresh = free.pop(0)
        start = at + (0.0 if fresh else gap)
        timeline.append({"start": start, "end": start + cost, "proc": f"n{i}"})
        free.append((start + cost, i, False))
    wall = max(t["end"] for t in timeline) + tail
    return {"wall_s": wall, "job_total_s": wall + fixed, "timeline": timeline}


def _point(workers: int, run: dict) -> dict:
    return {
        "workers": workers,
        "cpus": workers,
        "cpus_per_trial": 1,
        "runs": [run],
        "wall_s_median": run["wall_s"],
    }


def test_costs_are_read_back_from_a_timeline():
    c = predict.costs_of(_run(2, [4.0, 3.0, 2.0, 1.0]))
    assert c.trials == (4.0, 3.0, 2.0, 1.0)
    assert c.startup == pytest.approx(2.0) and c.gap == pytest.approx(0.1)
    assert c.tail == pytest.approx(0.5) and c.fixed == pytest.approx(5.0)


def test_leave_one_out_recovers_points_the_model_made():
    trials = [9.0, 7.0, 5.0, 5.0, 3.0, 2.0, 1.0, 1.0]
    points = [_point(n, _run(n, trials)) for n in (1, 2, 4)]
    v = predict.validation(points)
    assert [x["workers"] for x in v] == [1, 2, 4]
    assert all(abs(x["error"]) < 1e-6 for x in v)
    block = predict.study_prediction(points, ["--scheduler", "fifo"])
    assert block["method"] == "replay"
    at = {p["workers"]: p for p in block["points"]}
    # 8 trials: from 8 workers on, the longest trial (9 s) plus start-up and tail bound it.
    assert at[8]["wall_s"] == at[64]["wall_s"] == pytest.approx(2.0 + 9.0 + 0.5)
    assert predict.study_prediction(points, ["--scheduler", "asha"]) is None


def test_a_larger_search_is_drawn_with_its_spread():
    c = predict.costs_of(_run(2, [8.0, 4.0, 2.0, 1.0]))
    same = predict.predict(c, 2)
    assert same["wall_s"] == same["wall_s_p10"] == same["wall_s_p90"]
    big = predict.predict(c, 2, num_samples=64)
    assert big["wall_s_p10"] <= big["wall_s"] <= big["wall_s_p90"]
    # 64 trials of mean 3.75 s on 2 slots: about 120 s of search, plus start-up and tail.
    assert 100 < big["wall_s"] < 150


# ---- rayscale plan --------------------------------------------------------------------------


@pytest.fixture
def study(tmp_path):
    trials = [9.0, 7.0, 5.0, 5.0, 3.0, 2.0, 1.0, 1.0]
    points = [_point(n, _run(n, trials)) for n in (1, 2)]
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"points": points, "job_args": ["--scheduler", "fifo"]}))
    return path


def test_plan_prints_rows_and_marks_the_deadline_and_the_knee(study, tmp_path):
    p = run_cli(
        "plan", "--study", study, "--workers", "1,2,4,8,16", "--cpus-per-worker", 1,
        "--price", 1.0, "--head-price", 0.5, "--deadline", "20s", "--json", check=True,
    )  # fmt: skip
    rows = {r["workers"]: r for r in json.loads(p.stdout)}
    assert rows[1]["wall_s"] == pytest.approx(2.0 + 33.0 + 0.7 + 0.5, abs=0.1)
    assert rows[8]["wall_s"] == rows[16]["wall_s"]  # one wave from 8 on
    assert rows[4]["knee"] or rows[8]["knee"]
    fast_enough = [n for n, r in rows.items() if r["total_s"] <= 20]
    cheapest = min(fast_enough, key=lambda n: rows[n]["cost_usd"])
    assert rows[cheapest]["cheapest_in_deadline"]
    # workers x price + head, for the whole job
    r = rows[2]
    assert r["cost_usd"] == pytest.approx((2 * 1.0 + 0.5) * r["total_s"] / 3600, abs=1e-4)
    out = tmp_path / "plan"
    run_cli("plan", "--study", study, "--instance", "m5.2xlarge", "--out", out, check=True)
    assert {f.name for f in out.iterdir()} == {"plan.json", "plan.csv", "plan.png"}


def test_plan_bad_input_is_one_line(study, tmp_path):
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"points": [{"workers": 1, "runs": [{"wall_s": 3}]}]}))
    asha = tmp_path / "asha.json"
    asha.write_text(
        json.dumps({**json.loads(study.read_text()), "job_args": ["--scheduler", "asha"]})
    )
    cases = [
        (["--study", bare], ["no trial records", "rayscale scaling"]),
        (["--study", tmp_path / "nope.json"], ["cannot read the study"]),
        (["--study", asha], ["ASHA", "FIFO study"]),
        (["--study", study, "--instance", "m9.huge"], ["unknown instance type", "m5.2xlarge"]),
        (["--study", study, "--workers", "0,2"], ["--workers"]),
        (["--study", study, "--price", "-1"], ["cannot be negative"]),
        (["--study", study, "--deadline", "soon"], ["bad --deadline", "10m"]),
    ]
    for args, needles in cases:
        assert_one_line_error(run_cli("plan", *args), *needles)
