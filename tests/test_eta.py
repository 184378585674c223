"""rayscale.eta on progress records whose end is known."""

from __future__ import annotations

from rayscale import eta


def _records(costs: list[float], slots: int) -> tuple[list[dict], list[float]]:
    """The progress records of a FIFO search of trials of these costs on SLOTS slots, as
    job/progress.py writes them, and each trial's end (the search's schedule)."""
    free = [0.0] * slots
    runs = []  # (start, end)
    for c in costs:
        i = min(range(slots), key=lambda k: free[k])
        runs.append((free[i], free[i] + c))
        free[i] += c
    order = sorted(range(len(runs)), key=lambda k: runs[k][1])
    recs = []
    for done, k in enumerate(order, 1):
        at = runs[k][1]
        # The callback runs as the trial ends, before a pending trial takes its slot.
        running = [round(at - s, 3) for s, e in runs if s < at < e]
        recs.append(
            {"done": done, "total": len(costs), "at": at, "trial_s": costs[k], "running_s": running}
        )
    return recs, sorted(e for _, e in runs)


def test_equal_trials_are_estimated_exactly():
    recs, ends = _records([10.0] * 6, slots=1)
    est = eta.Eta()
    for r in recs[:2]:
        est.add(r)
    guess = est.estimate(now=recs[1]["at"])
    assert guess["left_s"] == guess["left_s_p10"] == guess["left_s_p90"] == ends[-1] - 20.0
    assert (guess["done"], guess["running"], guess["pending"]) == (2, 0, 4)


def test_the_spread_holds_the_real_end_of_an_uneven_search():
    costs = [30, 5, 12, 7, 22, 9, 15, 6, 18, 11, 8, 25]
    recs, ends = _records(costs, slots=3)
    est = eta.Eta()
    for r in recs[:6]:
        est.add(r)
    now = recs[5]["at"]
    guess = est.estimate(now=now)
    real_left = ends[-1] - now
    assert guess["left_s_p10"] <= guess["left_s"] <= guess["left_s_p90"]
    assert guess["left_s_p10"] <= real_left <= guess["left_s_p90"] * 1.25, (guess, real_left)
    # Time passing since the last record comes off the estimate.
    later = est.estimate(now=now + 5)
    assert later["left_s"] == max(0.0, guess["left_s"] - 5)


def test_no_estimate_before_the_first_trial_or_from_an_older_job():
    est = eta.Eta()
    assert est.estimate() is None
    est.add({"done": 1, "total": 4, "best_rmse": 1.0})  # a job from before the estimate
    assert est.estimate() is None
    assert eta.line(None) == "ETA after the first trial"


def test_money_spent_and_at_the_end():
    est = eta.Eta()
    est.add({"done": 1, "total": 2, "at": 3600.0, "trial_s": 1800.0, "running_s": []})
    guess = est.estimate(now=3600.0)
    assert guess["left_s"] == 1800.0  # one pending trial, one slot
    assert eta.cost(guess, est.started, 2.0, now=3600.0) == (1.0, 2.0)
    assert eta.cost(guess, est.started, None, now=3600.0) is None
    assert (
        eta.line(guess, (1.0, 2.0)) == "ETA 30m00s (30m00s-30m00s), $1.00 so far, $2.00 at the end"
    )


def test_from_a_jobs_log():
    recs, _ = _records([4.0, 4.0, 4.0], slots=1)
    log = "\n".join(
        ["driver says hi", *(f"{eta.MARKER}{__import__('json').dumps(r)}" for r in recs)]
    )
    est = eta.from_log(log)
    assert len(est.records) == 3 and est.estimate(now=recs[-1]["at"])["left_s"] == 0.0


def test_a_count_that_starts_again_starts_the_estimate_again():
    """The job's next mode (the sequential baseline after Tune) or a resumed search: its
    records are not mixed with the last one's; a record with no trial time shows none."""
    est = eta.Eta()
    first, _ = _records([10.0] * 4, slots=1)
    second, _ = _records([2.0] * 4, slots=1)
    for r in first:
        est.add(r)
    est.add({**second[0], "at": first[-1]["at"] + 2.0})
    assert len(est.records) == 1
    assert est.estimate(now=first[-1]["at"] + 2.0)["left_s"] == 6.0
    est.add({"done": 2, "total": 4, "best_rmse": 1.0})  # the joblib baseline's
    assert est.estimate() is None


def _work_records(works: list[float], slots: int, fixed: float = 1.0) -> tuple[list, float]:
    """A FIFO search whose trials take fixed + work seconds, with the work fields and plan
    job/progress.py writes; and the search's end."""
    recs, _ = _records([fixed + w for w in works], slots)
    free = [0.0] * slots
    runs = []
    for w in works:
        i = min(range(slots), key=lambda k: free[k])
        runs.append((free[i], free[i] + fixed + w, w))
        free[i] += fixed + w
    for r in recs:
        at = r["at"]
        r["work"] = next(w for s, e, w in runs if e == at)
        r["running"] = [[0, w, 100] for s, e, w in runs if s < at < e]
        r["started"] = sum(1 for s, _, _ in runs if s < at)
    recs[0]["plan"] = [[w, 100] for w in works]
    recs[0]["asha"] = None
    return recs, max(e for _, e, _ in runs)


def test_longest_first_trials_are_priced_by_their_work():
    """FIFO runs the longest configs first: the trials left are shorter than those done.
    Priced by their work, the rest of the search is estimated as it will run, where drawing
    from the finished trials' times would overshoot."""
    works = [40.0, 36.0, 30.0, 24.0, 20.0, 12.0, 8.0, 6.0, 4.0, 2.0, 2.0, 1.0]
    recs, end = _work_records(works, slots=2)
    k = 4
    est = eta.Eta()
    for r in recs[:k]:
        est.add(r)
    now = recs[k - 1]["at"]
    guess = est.estimate(now=now)
    assert abs(guess["left_s"] - (end - now)) / (end - now) < 0.1, (guess, end - now)
    naive = eta.Eta()
    for r in recs[:k]:
        naive.add({x: v for x, v in r.items() if x not in ("plan", "running", "work")})
    assert naive.estimate(now=now)["left_s"] > 1.5 * (end - now)


def test_asha_stops_trials_at_rungs_as_its_reduction_factor_makes_likely():
    import random

    asha = {"grace": 10, "rf": 4, "max": 160}
    rng = random.Random(1)
    ends = [eta._asha_rounds(0, 160, asha, rng) for _ in range(4000)]
    share = {r: ends.count(r) / len(ends) for r in set(ends)}
    assert set(share) == {10, 40, 160}
    assert abs(share[10] - 0.75) < 0.03 and abs(share[40] - 0.1875) < 0.03
    # A trial already past a rung has survived it.
    assert min(eta._asha_rounds(45, 160, asha, rng) for _ in range(200)) == 160
