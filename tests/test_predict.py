"""The replay model (rayscale.predict) on cases with known answers, and `rayscale plan`."""

from __future__ import annotations

import json
import math
import random

import pytest
from conftest import assert_one_line_error, run_cli

from rayscale import job_files, predict, replay
from rayscale.errors import UserError
from rayscale.study import summary


def test_equal_trials_fill_the_slots_in_waves():
    # 8 trials of 10 s on 4 slots: two waves; the second pays the gap between trials.
    assert replay.makespan([10.0] * 8, 4, startup=2.0, gap=0.5) == pytest.approx(22.5)
    # More slots than trials: one wave, no gap.
    assert replay.makespan([10.0] * 3, 8, startup=2.0, gap=0.5) == pytest.approx(12.0)


def test_one_long_trial_bounds_the_search():
    trials = [100.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    for slots in (2, 4, 64):
        assert replay.makespan(trials, slots, startup=3.0, gap=0.0) == pytest.approx(103.0)
    # One slot: everything in a row.
    assert replay.makespan(trials, 1, startup=3.0, gap=0.1) == pytest.approx(3 + 105 + 0.5)


def test_fifo_keeps_the_jobs_order():
    # Longest last on 2 slots: the long trial waits for a free slot (list scheduling).
    assert replay.makespan([1.0, 1.0, 1.0, 10.0], 2, 0.0, 0.0) == pytest.approx(11.0)
    assert replay.makespan([10.0, 1.0, 1.0, 1.0], 2, 0.0, 0.0) == pytest.approx(10.0)


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
    c = replay.costs_of(_run(2, [4.0, 3.0, 2.0, 1.0]))
    assert [t.cost for t in c.trials] == [4.0, 3.0, 2.0, 1.0]
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


def test_host_contention_carries_a_one_host_study_to_separate_machines():
    # On one 2-core host, 2 trials at once each take 1.25x as long; the baselines say so.
    trials = [9.0, 7.0, 5.0, 5.0, 3.0, 2.0, 1.0, 1.0]
    points = [_point(1, _run(1, trials)), _point(2, _run(2, [t * 1.25 for t in trials]))]
    study = {
        "provider": "local",
        "machine": {"cpus": 2},
        "baselines": {
            "sequential": {"sum_train_s": 40.0},
            "joblib": {"sum_train_s": 50.0, "n_jobs": 2},
        },
    }
    host = predict.host_of(study)
    assert host.factor(1) == 1.0 and host.factor(2) == pytest.approx(1.25)
    assert host.factor(8) == pytest.approx(1.25)  # the last measured holds past it
    # 3 slots on the study's 2 cores: the cores' contention, then 3 trials taking turns on 2.
    assert host.slowdown(3, 1) == pytest.approx(1.25 * 3 / 2)
    assert host.slowdown(1, 1) == 1.0
    # On separate machines only one worker's slots share a machine.
    apart = predict.host_of({**study, "one_machine": False})
    assert apart.slowdown(64, 1) == 1.0 and apart.slowdown(64, 2) == pytest.approx(1.25)
    assert all(abs(v["error"]) < 1e-6 for v in predict.validation(points, host=host))
    # Without the host's factor the same points miss each other by 25 %.
    assert all(abs(v["error"]) > 0.15 for v in predict.validation(points))
    # Separate machines of one CPU each: no contention, the 1-worker trials' costs.
    two = predict.at(points, 2, host=host)["wall_s"]
    assert two == pytest.approx(replay.makespan(trials, 2, 2.0, 0.1) + 0.5)
    # Two workers packed on one machine (worker pods on one node): their trials contend as
    # the study's host measured; one worker still has its machine to itself.
    packed = predict.at(points, 2, host=host, workers_per_node=2)["wall_s"]
    assert packed == pytest.approx(replay.makespan([t * 1.25 for t in trials], 2, 2.0, 0.1) + 0.5)
    alone = predict.at(points, 1, host=host, workers_per_node=2)["wall_s"]
    assert alone == pytest.approx(predict.at(points, 1, host=host)["wall_s"])


def test_without_baselines_a_one_host_studys_own_points_measure_its_contention():
    """No joblib baseline (`--baselines none`, a script of one's own): the same configs at
    1 and at 2 and 4 at once on the study's one machine give the factors; a point left out
    of the leave-one-out check does not price its own trials."""
    trials = [9.0, 7.0, 5.0, 5.0, 3.0, 2.0, 1.0, 1.0]
    slow = {1: 1.0, 2: 1.25, 4: 1.6}
    points = []
    for n, f in slow.items():
        run = _run(n, [t * f for t in trials])
        for i, t in enumerate(sorted(run["timeline"], key=lambda t: t["start"])):
            # The trials' configs, as Tune's rows give them: any JSON (a list of metrics,
            # a nested space, None).
            t["config"] = {"x": i, "metrics": ["rmse", "mae"], "nested": {"a": [i]}, "n": None}
        points.append(_point(n, run))
    study = {"provider": "local", "machine": {"cpus": 4}, "points": points}
    host = predict.host_of(study)
    assert host.from_points and host.factors == ((1, 1.0), (2, 1.25), (4, 1.6))
    # Leave one out, each point priced by factors from the others alone: 4 at once by the
    # factor at 2 (the last measured without it); 2 at once between 1 and 4 (1.2); and 1
    # by nothing (no point of one trial at a time is left to compare with): all missed.
    v = {r["workers"]: r["error"] for r in predict.validation(points, host=host)}
    # (The start-up, gaps and tail are not scaled: the walls miss by a little less.)
    assert 1.25 / 1.6 - 1 - 0.01 < v[4] < -0.15
    assert 1.2 / 1.25 - 1 - 0.01 < v[2] < 0
    assert v[1] > 0.2
    # Baselines, where there are some, take precedence over the points.
    based = {**study, "baselines": {
        "sequential": {"sum_train_s": 40.0}, "joblib": {"sum_train_s": 44.0, "n_jobs": 2}}}  # fmt: skip
    assert predict.host_of(based).factors == ((1, 1.0), (2, 1.1))


def test_host_contention_is_read_from_neighbouring_baseline_runs():
    # The machine drifted between the pairs (a fast second pair); each pair saw it alike.
    seq = [{"wall_s": 1.0, "sum_train_s": s} for s in (40.0, 20.0, 44.0)]
    par = [{"wall_s": 1.0, "sum_train_s": s} for s in (50.0, 26.0, 48.4)]
    baselines = {
        "sequential": summary.baseline_summary(seq),
        "joblib": {**summary.baseline_summary(par), "n_jobs": 2},
    }
    study = {"provider": "local", "machine": {"cpus": 2}, "baselines": baselines}
    # The pairs' ratios are 1.25, 1.30 and 1.10: their median, not the medians' 48.4 / 40.
    ratio = baselines["joblib"]["sum_train_s"] / baselines["sequential"]["sum_train_s"]
    assert ratio == pytest.approx(1.21)
    assert predict.host_of(study).factor(2) == pytest.approx(1.25)
    # A study from before the repeats: one run of each, the ratio of the two.
    one = {"sequential": {"sum_train_s": 40.0}, "joblib": {"sum_train_s": 46.0, "n_jobs": 2}}
    assert predict.host_of({**study, "baselines": one}).factor(2) == pytest.approx(1.15)


def _trial(total: int, notes: list[tuple[int, float]]) -> replay.Trial:
    """A trial of one second per round, with its rmse at the rounds given."""
    return replay.Trial(float(notes[-1][0]), total, tuple((r, m, float(r)) for r, m in notes))


def test_asha_stops_the_trials_its_rule_says():
    asha = replay.Asha(grace=1, rf=2, max_t=4)  # rungs at rounds 1 and 2
    trials = [
        _trial(4, [(1, 1.0), (2, 0.9), (4, 0.8)]),  # first at each rung: goes on
        _trial(4, [(1, 2.0), (2, 1.9), (4, 1.8)]),  # worse than the median of (1.0): stopped
        _trial(4, [(1, 0.5), (2, 0.6), (4, 0.4)]),  # best at rung 1, better than 0.9 at 2
        _trial(4, [(1, 1.5), (2, 1.4), (4, 1.3)]),  # 1.5 vs median of (1.0, 2.0, 0.5): stopped
    ]
    end, stopped = replay.asha_makespan(trials, 1, startup=0.0, gap=0.0, asha=asha)
    assert stopped == {1: 1, 3: 1}
    assert end == pytest.approx(4 + 1 + 4 + 1)
    # FIFO on the same trials runs all four to the end.
    assert replay.makespan([t.cost for t in trials], 1, 0.0, 0.0) == pytest.approx(16.0)


def test_asha_decides_in_the_order_results_arrive():
    asha = replay.Asha(grace=1, rf=2, max_t=4)
    slow_good = replay.Trial(8.0, 4, ((1, 0.1, 2.0), (2, 0.1, 4.0), (4, 0.1, 8.0)))
    fast_bad = _trial(4, [(1, 1.0), (2, 1.0), (4, 1.0)])
    # On 2 slots the bad trial reaches rung 1 first (nothing to compare with: it goes on)
    # and rung 2 first as well; the good one is compared with it and goes on too.
    end, stopped = replay.asha_makespan([slow_good, fast_bad], 2, 0.0, 0.0, asha)
    assert stopped == {} and end == pytest.approx(8.0)
    # One slot: the good trial's results come first, and the bad one is stopped at rung 1.
    end, stopped = replay.asha_makespan([slow_good, fast_bad], 1, 0.0, 0.0, asha)
    assert stopped == {1: 1} and end == pytest.approx(8.0 + 1.0)


def test_a_trial_the_run_stopped_is_extrapolated_where_the_replay_lets_it_go_on():
    asha = replay.Asha(grace=2, rf=2, max_t=8)  # rungs 2, 4
    stopped_at_2 = replay.Trial(3.0, 8, ((2, 0.7, 3.0),))  # 1.5 s per round, then stopped
    assert replay.path(stopped_at_2, asha) == [(2, 0.7, 3.0), (4, 0.7, 6.0), (8, 0.7, 12.0)]
    end, stopped = replay.asha_makespan([stopped_at_2], 1, 1.0, 0.0, asha)
    assert stopped == {} and end == pytest.approx(13.0)


def test_the_asha_rule_is_tunes():
    """replay.on_result against Ray Tune's own _Bracket on random results."""
    import random

    from ray.tune.schedulers.async_hyperband import _Bracket

    class T:
        def __init__(self, i):
            self.trial_id = i

    rng = random.Random(1)
    for rf in (2, 3, 4):
        ours = [(m, {}) for m in reversed(replay.Asha(1, rf, 100).rungs())]
        theirs = _Bracket(min_t=1, max_t=100, reduction_factor=rf, s=0)
        assert [m for m, _ in ours] == [m for m, _ in theirs._rungs]
        for _ in range(300):
            i, rounds = rng.randrange(30), rng.choice([1, rf, rf * rf, rf**3, 7])
            reward = -rng.random()
            assert replay.on_result(ours, i, rounds, reward, rf) == (
                theirs.on_result(T(i), rounds, reward) == "STOP"
            )


def test_asha_of_reads_the_jobs_arguments_and_its_defaults():
    assert predict.asha_of(["--scheduler", "asha"]) == replay.Asha(75, 3, 300)
    assert predict.asha_of(
        ["--max-rounds", "200", "--grace-rounds=10", "--reduction-factor", "2"]
    ) == replay.Asha(10, 2, 200)
    assert replay.Asha(10, 2, 200).rungs() == [10, 20, 40, 80, 160]


def test_a_larger_search_is_drawn_with_its_spread():
    c = replay.costs_of(_run(2, [8.0, 4.0, 2.0, 1.0]))
    same = replay.predict(c, 2)
    assert same["wall_s"] == same["wall_s_p10"] == same["wall_s_p90"]
    big = replay.predict(c, 2, num_samples=64)
    assert big["wall_s_p10"] <= big["wall_s"] <= big["wall_s_p90"]
    # 64 trials of mean 3.75 s on 2 slots: about 120 s of search, plus start-up and tail.
    assert 100 < big["wall_s"] < 150


# ---- the cost model of a larger search -------------------------------------------------------

TRUE = (-6.0, 1.0, 0.4, 0.1, 0.3, -0.1, -0.1)  # the formula the tests' costs are made by


def _cost(cfg: dict, rounds: int | None = None) -> float:
    x = predict.features(cfg, rounds or cfg["num_boost_round"])
    return float(math.exp(sum(b * v for b, v in zip(TRUE, x, strict=True))))


def _configs(n: int) -> list[dict]:
    return job_files.drawn_configs(["--scheduler", "fifo"], n)["configs"]


def test_the_cost_model_recovers_the_formula_that_made_the_costs():
    configs = _configs(16)
    rows = [(c, c["num_boost_round"], _cost(c)) for c in configs]
    model = predict.fit_costs(rows)
    assert model.coef == pytest.approx(TRUE, abs=1e-6)
    check = predict.cost_model_check(rows)
    assert check["configs"] == 16 and check["loo_error_p90"] < 1e-6
    # Costs that depend on min_child_weight and the learning rate: the work terms alone miss.
    assert check["work_terms_only"]["loo_error_median"] > 0.01
    # A term the space fixes says nothing: it is left out, the others still fit.
    fixed = [({**c, "subsample": 0.8}, n, t) for c, n, t in rows]
    assert predict.fit_costs(fixed).coef[3] == 0.0
    assert predict.fit_costs(rows[: predict.MIN_CONFIGS - 1]) is None


def test_a_larger_search_prices_each_of_its_configs_by_the_model():
    configs = _configs(12)
    rows = tuple((c, c["num_boost_round"], _cost(c)) for c in configs)
    same = {**configs[0], "num_boost_round": 100}
    search = predict.Search((same,) * 8, rows)
    c = replay.costs_of(_run(2, [1.0] * 4))  # start-up 2, gap 0.1, tail 0.5
    r = replay.predict(c, 4, num_samples=8, search=search, factor=2.0)
    # 8 equal trials on 4 slots: two waves of the model's cost, times the host's factor.
    expected = 2.0 + 2 * 2.0 * _cost(same) + 0.1 + 0.5
    for k in ("wall_s", "wall_s_p10", "wall_s_p90"):
        assert r[k] == pytest.approx(expected)


def test_a_config_not_measured_takes_the_asha_notes_of_the_nearest_measured_one():
    configs = _configs(12)
    rows = tuple((c, c["num_boost_round"], _cost(c)) for c in configs)
    a = replay.Asha(25, 3, 300)
    notes = (((25, 2.0), (75, 1.5)), ((25, 1.0),))
    trials = predict.Search(tuple(configs[:2]), rows, notes).trials(random.Random(0), a, 1.0)
    t = trials[0]
    assert [m[0] for m in t.marks] == [*(r for r in a.rungs() if r < t.total), t.total]
    assert [m[1] for m in t.marks][:2] == [2.0, 1.5] and t.marks[-1][1] == 1.5
    assert t.marks[0][2] == pytest.approx(_cost(configs[0], 25))
    assert trials[1].marks[-1][1] == 1.0 and trials[1].draw == 1


def test_the_job_prints_the_configs_a_search_would_try():
    big = job_files.drawn_configs(["--scheduler", "fifo", "--num-samples", "4"], 64)
    assert big["configs"][:16] == _configs(16)  # the study's configs open the larger search
    assert sorted(big["order"]) == list(range(64))

    def formula(cfg):  # job/space.py's cost, which orders a FIFO search longest first
        return (
            cfg["num_boost_round"]
            * 2 ** cfg["max_depth"]
            * cfg["subsample"]
            * cfg["colsample_bytree"]
        )

    costs = [formula(big["configs"][i]) for i in big["order"]]
    assert costs == sorted(costs, reverse=True)
    asha = job_files.drawn_configs(["--scheduler", "asha"], 8)
    assert asha["order"] == list(range(8)) and asha["configs"] == big["configs"][:8]
    with pytest.raises(UserError, match="could not list the study's configs.*not found"):
        job_files.drawn_configs(["--search-space", "/nonexistent.yaml"], 8)


def test_plan_prices_a_larger_search_by_the_cost_model(tmp_path):
    """A study whose trials carry only their draw: plan asks the job for the 64 configs,
    fits the model on the 16 measured, and replays the job's order of all 64."""
    drawn = job_files.drawn_configs(["--scheduler", "fifo"], 64)
    first = [i for i in drawn["order"] if i < 16]  # the study's own order of its 16
    run = _run(1, [_cost(drawn["configs"][i]) for i in first])
    for t, i in zip(run["timeline"], first, strict=True):
        t.update(draw=i, rounds=drawn["configs"][i]["num_boost_round"])
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"points": [_point(1, run)], "job_args": ["--scheduler", "fifo"]}))
    p = run_cli(
        "plan", "--study", path, "--workers", "1,2", "--cpus-per-worker", 1,
        "--num-samples", 64, "--out", tmp_path / "plan", check=True,
    )  # fmt: skip
    said = " ".join(p.stdout.split())
    assert "priced by a cost model fitted on the study's 16 trials of 16 configs" in said
    # The study ran no joblib baseline: the plan says what it assumed instead.
    assert "Trials at once on one machine: not measured" in said
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["trial_costs"] == "cost model" and plan["cost_model"]["loo_error_p90"] < 1e-6
    costs = [_cost(drawn["configs"][i]) for i in drawn["order"]]
    for row in plan["rows"]:
        expected = replay.makespan(costs, row["workers"], 2.0, 0.1) + 0.5
        assert row["wall_s"] == pytest.approx(expected, abs=0.1)
        assert row["wall_s_p10"] == pytest.approx(row["wall_s_p90"], abs=0.1)


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
        (["--study", asha], ["noted nothing at ASHA's rungs", "--scheduler fifo"]),
        (["--study", study, "--scheduler", "asha"], ["noted nothing at ASHA's rungs"]),
        (["--study", study, "--instance", "m9.huge"], ["unknown instance type", "m5.2xlarge"]),
        (["--study", study, "--workers", "0,2"], ["--workers"]),
        (["--study", study, "--price", "-1"], ["cannot be negative"]),
        (["--study", study, "--deadline", "soon"], ["bad --deadline", "10m"]),
        (["--study", study, "--workers-per-node", "0"], ["--workers-per-node must be at least 1"]),
    ]
    for args, needles in cases:
        assert_one_line_error(run_cli("plan", *args), *needles)


def test_plan_replays_asha_on_a_fifo_studys_notes(tmp_path):
    # 8 trials of 8 rounds, 1 s per round, noted at rounds 2, 4 and 8 (ASHA's rungs for
    # grace 2, rf 3 are 2 and 6: 6 is extrapolated); the later the trial, the worse its RMSE.
    timeline = []
    for i in range(8):
        start = 1.0 + 8.0 * i
        notes = [[r, 1.0 + i + (8 - r) / 10, float(r)] for r in (2, 4, 8)]
        timeline.append(
            {"start": start, "end": start + 8.0, "proc": "n0", "total_rounds": 8, "marks": notes}
        )
    run = {"wall_s": 65.0, "job_total_s": 70.0, "timeline": timeline}
    path = tmp_path / "study.json"
    args = ["--scheduler", "fifo", "--max-rounds", "8", "--grace-rounds", "2"]
    path.write_text(json.dumps({"points": [_point(1, run)], "job_args": args}))

    def rows(*extra):
        p = run_cli("plan", "--study", path, "--workers", "1", "--json", *extra, check=True)
        return json.loads(p.stdout)[0]

    fifo, asha = rows(), rows("--scheduler", "asha")
    assert fifo["wall_s"] == pytest.approx(65.0, abs=0.1)
    # Trial 0 runs on; 1 stops at rung 2 (worse than 0); 2 at rung 2 (the rf=3 cutoff is the
    # best third) and so on: each of 1..7 costs 2 s instead of 8.
    assert asha["wall_s"] == pytest.approx(1.0 + 8.0 + 7 * 2.0, abs=0.1)


# ---- Tune's driver: a ceiling on trial starts and results a second ----------------------------


def _driven(point: dict, events: int, cores: float) -> dict:
    """The point's run with its driver measured: EVENTS in the window, its CPU CORES."""
    run = point["runs"][0]
    window = max(t["end"] for t in run["timeline"]) - min(t["start"] for t in run["timeline"])
    run["trials"] = len(run["timeline"])
    rate = events / window
    run["driver"] = {
        "events": events,
        "events_per_s": rate,
        "cpu_cores": cores,
        "cpu_s_per_event": cores / rate,
    }
    return point


def test_the_drivers_cost_is_its_cpu_against_its_event_rate():
    """Three runs whose driver used 0.05 cores idle plus 20 ms per event: the fit finds
    both, and the driver's capacity is what one core holds."""
    trials = [4.0] * 16
    points = [_point(n, _run(n, trials)) for n in (1, 2, 4)]
    for p in points:
        run = p["runs"][0]
        window = max(t["end"] for t in run["timeline"]) - min(t["start"] for t in run["timeline"])
        _driven(p, 80, 0.05 + 0.02 * 80 / window)
    d = replay.driver_of(points)
    assert d.per_event == pytest.approx(0.02) and d.idle == pytest.approx(0.05)
    assert d.events_per_trial == 5 and d.capacity == pytest.approx(0.95 / 0.02)
    # Not measured: no ceiling, and the replay is the trials' alone.
    assert replay.driver_of([_point(1, _run(1, trials))]).capacity is None


def test_a_driver_that_cannot_keep_up_sets_the_searchs_time():
    """64 trials of 1 s, 10 events each, a driver of 50 ms an event: 32 s of driver work.
    On 4 slots the trials take 16 s and the driver 32 s; on 1 slot the trials (64 s)."""
    trials = [1.0] * 64
    c = replay.costs_of(_run(1, trials, startup=0.0, gap=0.0, tail=0.0))
    c = predict.replace(c, driver=replay.Driver(0.05, 0.0, 10.0))
    assert replay.bounds(c, 4) == pytest.approx((16.0, 32.0))
    assert replay.search_wall(c, 4) == pytest.approx(32.0)
    assert replay.search_wall(c, 1) == pytest.approx(64.0)
    assert replay.predict(c, 4)["driver_floor_s"] == pytest.approx(32.0)


def test_plan_marks_where_the_driver_limits(tmp_path):
    """A study whose driver took 200 ms an event, 5 events a trial: 16 s of driver work for
    the 16 trials, longer than their schedule from 8 workers on."""
    trials = [9.0, 7.0, 5.0, 5.0, 3.0, 2.0, 1.0, 1.0] * 2
    points = [_driven(_point(n, _run(n, trials)), 80, 0.0) for n in (1, 2)]
    for p in points:  # 100 ms an event at whatever rate each ran
        d = p["runs"][0]["driver"]
        d["cpu_s_per_event"], d["cpu_cores"] = 0.2, 0.2 * d["events_per_s"]
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"points": points, "job_args": ["--scheduler", "fifo"]}))
    p = run_cli(
        "plan", "--study", path, "--workers", "1,2,4,8,16", "--cpus-per-worker", 1,
        "--price", 1.0, "--out", tmp_path / "plan", check=True,
    )  # fmt: skip
    said = " ".join(p.stdout.split())
    assert "at most 5 trial starts and results a second (200.0 ms" in said, said
    assert "it sets the time from 8 workers" in said
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    rows = {r["workers"]: r for r in plan["rows"]}
    assert [n for n, r in rows.items() if r["driver_limited"]] == [8, 16]
    # There the search takes the driver's 16 s (+ start-up 2 s and tail 0.5 s), not the
    # trials' one wave of 9 s; below it the trials' schedule.
    assert rows[8]["wall_s"] == rows[16]["wall_s"] == pytest.approx(18.5, abs=0.1)
    assert rows[4]["wall_s"] > 18.5 and plan["driver"]["limits_from_workers"] == 8


# ---- trial processes starting on one machine; trials that wait ---------------------------------


def _staggered(workers: int, each: float, trials: int, ahead: float, busy: float) -> dict:
    """A one-host run of WORKERS one-CPU workers: slot j's process starts its first trial
    AHEAD x j seconds into the search; every trial takes EACH seconds; the worker nodes
    kept BUSY cores per trial."""
    timeline = []
    for j in range(workers):
        t = ahead * j
        for _ in range(trials // workers):
            timeline.append({"start": t, "end": t + each, "proc": f"p{j}"})
            t += each
    wall = max(t["end"] for t in timeline)
    run = {"wall_s": wall, "job_total_s": wall + 5.0, "timeline": timeline}
    run["cpu_busy_by_node"] = {"head": 0.1, **{f"w{i}": busy for i in range(workers)}}
    return _point(workers, run)


def test_trial_processes_on_one_machine_start_one_after_another():
    """Processes that start on one 2-core machine each wait 0.5 s per process ahead of them:
    the model reads that from the study, replays it on the study's machine, and not on
    separate machines, where each starts at once."""
    points = [_staggered(n, 4.0, 16, 0.5, 1.0) for n in (1, 2, 4)]
    host = predict.host_of({"provider": "local", "machine": {"cpus": 4}, "points": points})
    assert predict.startup_of(points, host) == pytest.approx((0.0, 0.5))
    # Leave one out: each point from the others, the processes' queue included.
    assert all(abs(v["error"]) < 1e-6 for v in predict.validation(points, host=host))
    # 8 slots on the study's one machine: the last process starts 3.5 s in, then 2 trials.
    shape = {"workers": 8, "cpus": 8, "cpus_per_trial": 1}
    assert predict.replay_at(points, shape, host=predict.replace(host, cpus=8)) == pytest.approx(
        3.5 + 8.0
    )
    # 8 separate one-CPU machines: one process each, all at once.
    assert predict.at(points, 8, 1, host=host)["wall_s"] == pytest.approx(8.0)


def test_trials_that_wait_do_not_crowd_the_cores():
    """Trials that keep 3 % of a core busy (they sleep): 16 at once on a 2-core machine do
    not take turns on its cores, as trials that compute would."""
    waiting = [_staggered(n, 2.0, 16, 0.0, 0.03) for n in (1, 2)]
    host = predict.host_of({"provider": "local", "machine": {"cpus": 2}, "points": waiting})
    assert host.cpu_share == pytest.approx(0.03)
    assert host.slowdown(16, 1) == 1.0
    computing = [_staggered(n, 2.0, 16, 0.0, 1.0) for n in (1, 2)]
    host = predict.host_of({"provider": "local", "machine": {"cpus": 2}, "points": computing})
    assert host.cpu_share == 1.0 and host.slowdown(16, 1) == pytest.approx(8.0)


def test_plan_borrows_the_drivers_cost_from_another_study(study, tmp_path):
    """A study that measured no driver (an older one, or a provider that cannot see its
    processes) takes the cost per event from one that did; its events per trial are assumed
    the fewest, a start and a result. A study with no driver figures is refused."""
    trials = [9.0, 7.0, 5.0, 5.0, 3.0, 2.0, 1.0, 1.0] * 2
    measured = [_driven(_point(n, _run(n, trials)), 80, 0.0) for n in (1, 2)]
    for p in measured:
        d = p["runs"][0]["driver"]
        d["cpu_s_per_event"], d["cpu_cores"] = 0.5, 0.5 * d["events_per_s"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"points": measured, "job_args": []}))
    p = run_cli(
        "plan", "--study", study, "--workers", "1,8", "--cpus-per-worker", 1, "--price", 1.0,
        "--driver-from", other, "--json", check=True,
    )  # fmt: skip
    rows = {r["workers"]: r for r in json.loads(p.stdout)}
    # 8 trials x 2 events x 0.5 s = 8 s of driver (+ the 2 s start-up and 0.5 s tail):
    # short of the 8 workers' one wave (the 9 s longest trial), far from 1 worker's.
    assert rows[8]["driver_floor_s"] == pytest.approx(2.0 + 8.0 + 0.5, abs=0.1)
    assert not rows[1]["driver_limited"] and not rows[8]["driver_limited"]
    said = " ".join(run_cli("plan", "--study", study, "--driver-from", other).stdout.split())
    assert "2 a trial assumed" in said and f"measured in {other}" in said
    bad = run_cli("plan", "--study", study, "--driver-from", study)
    assert_one_line_error(bad, "has no measurements of Tune's driver", "make scale")


CATALOG = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone
big.8,,,8,32,0.80,0.30,us-east-1,us-east-1a
big.8,,,8,32,0.90,0.35,us-west-2,us-west-2a
mid.4,,,4,16,0.30,0.10,us-east-1,us-east-1a
small.2,,,2,8,0.10,0.04,us-east-1,us-east-1b
gpu.4,V100,1,4,16,0.01,,us-east-1,us-east-1a
reserved.2,,,2,8,,0.02,us-east-1,us-east-1a
"""


def _plan_rows(study, *args) -> dict[int, dict]:
    p = run_cli("plan", "--study", study, "--workers", "1,2,4,8", "--json", *args, check=True)
    return {r["workers"]: r for r in json.loads(p.stdout)}


def test_a_price_catalog_prices_a_type_and_finds_the_cheapest(study, tmp_path):
    """A catalog in SkyPilot's format: a type at its price in the region asked; `cheapest`
    compares every CPU type able to host a trial (not the GPU one, not a row with no
    on-demand price) at its cheapest worker count within the deadline."""
    cat = tmp_path / "aws.csv"
    cat.write_text(CATALOG)
    west = _plan_rows(study, "--prices", cat, "--instance", "big.8", "--region", "us-west-2")
    r = west[2]
    assert r["cost_usd"] == pytest.approx((2 * 0.9 + 0.9) * r["total_s"] / 3600, abs=1e-4)

    out = tmp_path / "plan"
    run_cli("plan", "--study", study, "--workers", "1,2,4,8", "--prices", cat, "--instance",
            "cheapest", "--deadline", "30s", "--out", out, check=True)  # fmt: skip
    doc = json.loads((out / "plan.json").read_text())
    ranked = doc["instances"]
    assert [t["instance"] for t in ranked] and "gpu.4" not in [t["instance"] for t in ranked]
    assert "reserved.2" not in [t["instance"] for t in ranked]
    assert doc["prices_read"].startswith("aws.csv (modified ")
    # Each type's own plan: the ranking's first is the cheapest within the deadline.
    best = {}
    for name in ("big.8", "mid.4", "small.2"):
        rows = _plan_rows(study, "--prices", cat, "--instance", name, "--region", "us-east-1")
        meets = [x["cost_usd"] for x in rows.values() if x["total_s"] <= 30]
        if meets:
            best[name] = min(meets)
    assert ranked[0]["instance"] == min(best, key=best.get)
    # (the ranking prices the job's time as the table rounds it, to 0.1 s)
    assert [t["cost_usd"] for t in ranked] == pytest.approx(sorted(best.values()), abs=2e-4)
    assert doc["machine"].startswith(ranked[0]["instance"])


def test_a_malformed_catalog_is_one_line_naming_its_row_and_column(study, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(CATALOG.replace("mid.4,,,4,16,0.30", "mid.4,,,4,16,abc"))
    p = run_cli("plan", "--study", study, "--prices", bad, "--instance", "mid.4")
    assert_one_line_error(p, "bad.csv row 4, column Price: 'abc' is not a number")
    headless = tmp_path / "headless.csv"
    headless.write_text("Type,CPUs\nx,2\n")
    p = run_cli("plan", "--study", study, "--prices", headless, "--instance", "x")
    assert_one_line_error(p, "has no InstanceType, vCPUs, MemoryGiB, Price column")
    p = run_cli("plan", "--study", study, "--instance", "no.such")
    assert_one_line_error(p, "unknown instance type 'no.such' in the prices of the built-in table")
