"""make bench's trial clocks: what the trials' own wall and CPU times say of the speedup."""

import pytest

from bench import bench


def run(train: float, cpu: float | None) -> dict:
    return {"wall_s": train, "sum_train_s": train, "sum_train_cpu_s": cpu}


def test_trial_clocks_split_the_slowdown_into_waiting_and_cpu():
    study = {
        "points": [
            {"workers": 1, "runs": [run(50.0, 50.0), run(52.0, 51.0), run(60.0, 60.0)]},
            # 2 at once: 56 s of training, of which 52.5 s on a core.
            {"workers": 2, "runs": [run(56.0, 52.5), run(58.0, 52.2), run(55.0, 52.8)]},
        ],
        "baselines": {
            "sequential": {"runs": [run(50.0, 50.0)]},
            "joblib": {"runs": [run(52.0, 51.0)]},
        },
    }
    clocks = bench.trial_clocks(study)
    assert clocks["trials_only_speedup_1_to_2"] == pytest.approx(2 * 52.0 / 56.0, abs=1e-3)
    share = clocks["core_share"]
    assert share["ray_1_worker"] == 1.0  # the median run's: 50/50, 51/52, 60/60
    assert share["ray_2_workers"] == pytest.approx(52.5 / 56.0, abs=1e-3)
    assert share["loop"] == 1.0 and share["joblib_2"] == pytest.approx(51.0 / 52.0, abs=1e-3)
    cpu = clocks["cpu_2_at_once_over_1"]
    assert cpu["ray"] == pytest.approx(52.5 / 51.0, abs=1e-3)
    assert cpu["joblib_over_loop"] == pytest.approx(51.0 / 50.0, abs=1e-3)


def test_trial_clocks_of_a_study_without_cpu_times_are_none():
    study = {"points": [{"workers": 1, "runs": [run(50.0, None)]}], "baselines": {}}
    clocks = bench.trial_clocks(study)
    assert clocks["trials_only_speedup_1_to_2"] is None
    assert set(clocks["core_share"].values()) == {None}
    assert set(clocks["cpu_2_at_once_over_1"].values()) == {None}


def test_compare_sets_the_runs_side_by_side_with_their_verdicts():
    from bench import compare

    def b(speedup, met):
        return {"figures": {"speedup_1_to_2": speedup}, "targets": {"speedup_1_to_2": {"met": met}}}

    out = compare.table(
        {"local": b(1.9, True), "docker": b(1.7, False)}, {"speedup_1_to_2": ">= 1.85"}
    )
    row = next(line for line in out.splitlines() if "speedup_1_to_2" in line)
    assert row == "| `speedup_1_to_2` | 1.9 ✓ | 1.7 ✗ | >= 1.85 |"
    assert out.splitlines()[0] == "| figure | local | docker | target |"
    # A figure a run has not measured shows as a dash, not a zero.
    assert "| `idle_head_rss_gib` | - | - | - |" in out


def test_scale_ideal_schedule_and_each_process_first_trial():
    """make scale's yardsticks: the search with free orchestration (Tune's order, first free
    slot), and when each trial process began its first trial."""
    from bench import scale

    assert scale.ideal_s([4.0, 1.0, 1.0, 1.0, 1.0], 2) == 4.0
    assert scale.ideal_s([1.0, 1.0, 1.0, 1.0], 2) == 2.0
    assert scale.ideal_s([3.0, 2.0, 2.0], 1) == 7.0
    run = {
        "timeline": [
            {"proc": "ip:1", "start": 0.0},
            {"proc": "ip:2", "start": 1.7},
            {"proc": "ip:1", "start": 2.5},
            {"proc": "ip:2", "start": 4.0},
        ]
    }
    assert scale.trial_starts(run) == [0.0, 1.7]
