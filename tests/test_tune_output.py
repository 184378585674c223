"""How a trial's start and end are read from Tune's result rows (whole-second timestamps)."""

from __future__ import annotations

import pytest

from rayscale import tune_output


def _rows(start: float, times: list[float]) -> list[list]:
    """Rows as Tune writes them for a trial that started at START and reported at
    START + each of TIMES: int(time.time()) and the exact time since the trial's start."""
    return [[i + 1, int(start + t), t, 1.0 / (i + 1), "10.0.0.1", 7] for i, t in enumerate(times)]


def test_many_reports_pin_the_start_far_below_a_second():
    start = 1000.37
    s, e, err = tune_output.span(_rows(start, [0.1 * k for k in range(1, 30)]))
    assert abs(s - start) <= err <= 0.06
    assert e == pytest.approx(s + 2.9)


def test_one_report_puts_the_start_within_half_a_second():
    s, e, err = tune_output.span(_rows(1000.9, [2.0]))
    assert err == pytest.approx(0.5) and abs(s - 1000.9) <= 0.5
    assert e - s == pytest.approx(2.0)


def test_a_trial_without_rows_has_no_span():
    assert tune_output.span([]) is None


def test_experiment_timeline_best_and_window():
    doc = {
        "path": "/x",
        "metric": "loss",
        "mode": "max",
        "trials": [
            {"trial_id": "a", "status": "TERMINATED", "config": {"x": 1},
             "rows": _rows(100.2, [0.5, 1.0])},
            {"trial_id": "b", "status": "TERMINATED", "config": {"x": 2},
             "rows": _rows(101.6, [0.5])},
            {"trial_id": "c", "status": "ERROR", "config": {"x": 3}, "rows": []},
        ],
    }  # fmt: skip
    exp = tune_output.experiment_of(doc)
    assert exp.best() == 1.0  # each trial's last row; max mode
    tl = exp.timeline()
    assert [t["rounds"] for t in tl] == [2, 1]  # the errored trial never reported
    assert tl[0]["start"] == 0.0 and tl[1]["start"] > tl[0]["start"]
    assert tl[0]["proc"] == "10.0.0.1:7"
    w0, w1 = exp.window
    assert w1 - w0 == pytest.approx(tl[1]["end"])
