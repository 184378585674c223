"""The scaling-law fits recover known parameters from synthetic points."""

from __future__ import annotations

import pytest

from rayscale import fit
from rayscale.study.plan import order, search_note, study_job_args
from rayscale.study.summary import summarise


def test_amdahl_recovers_serial_fraction():
    n = [1, 2, 4, 8, 16]
    s = [float(fit.amdahl(k, 0.07)) for k in n]
    out = fit.fit(n, s)
    assert out["amdahl_serial_fraction"] == pytest.approx(0.07, abs=1e-3)


def test_usl_recovers_sigma_kappa_and_peak():
    n = [1, 2, 4, 8, 16, 32]
    s = [float(fit.usl(k, 0.05, 0.002)) for k in n]
    out = fit.fit(n, s)
    assert out["usl_sigma"] == pytest.approx(0.05, abs=2e-3)
    assert out["usl_kappa"] == pytest.approx(0.002, abs=2e-4)
    # n* = sqrt((1 - sigma) / kappa) = sqrt(0.95 / 0.002) ~ 21.8
    assert out["peak_workers"] == 22
    # Exact data: the parameters' standard errors are ~0, and they are reported.
    assert out["usl_sigma_stderr"] is not None and out["usl_sigma_stderr"] < 1e-3
    pred = {p["workers"]: p["speedup"] for p in out["predicted"]}
    assert max(pred) == 256  # extrapolated to 8x the largest count measured
    assert pred[16] == pytest.approx(float(fit.usl(16, 0.05, 0.002)), rel=1e-2)


def test_two_points_fit_nothing_and_say_why():
    """Two points fix a one-parameter law exactly: no fit is reported as if it were data."""
    out = fit.fit([1, 2], [1.0, 1.8])
    assert out["amdahl_serial_fraction"] is None and out["usl_sigma"] is None
    assert out["predicted"] == [] and "need 3 or more" in out["note"]


def test_one_point_fits_nothing():
    out = fit.fit([1], [1.0])
    assert out["amdahl_serial_fraction"] is None and out["predicted"] == []


def test_order_interleaves_repeats():
    assert order([1, 2, 4], 2) == [(0, 1), (0, 2), (0, 4), (1, 4), (1, 2), (1, 1)]


def test_study_job_args_pins_fifo_and_seed_but_respects_the_user():
    assert study_job_args(["--num-samples", "4"]) == [
        "--num-samples",
        "4",
        "--scheduler",
        "fifo",
        "--seed",
        "0",
    ]
    assert study_job_args(["--scheduler", "asha", "--seed=3"]) == [
        "--scheduler",
        "asha",
        "--seed=3",
    ]


def test_summarise_speedup_efficiency_overhead():
    runs = [
        {
            "workers": 1,
            "cpus": 1,
            "wall_s": 10.0,
            "sum_train_s": 9.0,
            "trials_completed": 10,
            "best_metric": 1.0,
            "cpu_busy_avg": 0.9,
            "cpu_busy_by_node": {},
            "job_id": "a",
            "repeat": 0,
        },
        {
            "workers": 2,
            "cpus": 2,
            "wall_s": 5.5,
            "sum_train_s": 9.5,
            "trials_completed": 10,
            "best_metric": 1.0,
            "cpu_busy_avg": 0.85,
            "cpu_busy_by_node": {},
            "job_id": "b",
            "repeat": 0,
        },
    ]
    p1, p2 = summarise(runs)
    assert p1["speedup"] == 1.0 and p2["speedup"] == pytest.approx(10 / 5.5, abs=1e-3)
    assert p2["efficiency"] == pytest.approx(10 / 5.5 / 2, abs=1e-3)
    # (wall x CPUs - sum of train time) / trials = (5.5*2 - 9.5) / 10
    assert p2["overhead_per_trial_s"] == pytest.approx(0.15, abs=1e-4)


def test_disturbed_runs_are_not_timed_and_mark_their_point():
    def run(n, wall, repeat, hit=()):
        return {"workers": n, "cpus": n, "wall_s": wall, "sum_train_s": 9.0,
                "trials_completed": 10, "best_metric": 1.0, "cpu_busy_avg": None,
                "repeat": repeat, "disturbed_by": list(hit)}  # fmt: skip

    lost = ["1 workers lost and replaced"]
    p1, p2, p3 = summarise(
        [run(1, 10.0, 0), run(2, 5.0, 0), run(2, 30.0, 1, lost), run(3, 20.0, 0, lost)]
    )
    # Point 2 is timed by its clean run alone; point 3 has none, so it is marked.
    assert p2["wall_s_median"] == 5.0 and p2["speedup"] == 2.0
    assert (p2["disturbed"], p2["disturbed_runs"]) == (False, 1)
    assert (p3["disturbed"], p3["disturbed_runs"]) == (True, 1) and not p1["disturbed"]
    assert p2["wall_s_max"] == 30.0  # the disturbed run is kept, not hidden


def test_search_note_only_for_adaptive_searches():
    assert search_note(["--num-samples", "4"]) is None
    assert search_note(["--search-alg", "random"]) is None
    assert "adaptive" in search_note(["--search-alg", "optuna"])
    assert "adaptive" in search_note(["--search-alg=optuna"])
