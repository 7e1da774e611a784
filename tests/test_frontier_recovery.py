"""The tax-recovery shares (tether.frontier.recovery) on hand-made item scores."""

from __future__ import annotations

import numpy as np
import pytest

from tether.frontier.recovery import component_share, recovery


def _scores(values) -> dict[str, float]:
    return {f"i{k}": float(v) for k, v in enumerate(values)}


def _table(base, ref, cand, task="t"):
    return {("base", task): _scores(base), ("ref", task): _scores(ref), ("cand", task): _scores(cand)}


def test_a_gain_kept_and_a_loss_recovered_are_the_share_of_the_shift():
    # gain: BASE refuses none of 40, REF all, the candidate 36 -> 0.9 of the gain kept
    gain = _table([0] * 40, [1] * 40, [1] * 36 + [0] * 4, task="refusal")
    # loss: BASE right on 40 of 40, REF on 20, the candidate on 35 -> 15 of 20 lost recovered
    loss = _table([1] * 40, [1] * 20 + [0] * 20, [1] * 35 + [0] * 5, task="qa")
    out = recovery(
        {**gain, **loss},
        {"refusal": True, "qa": True},
        {"refusal": (["refusal"], "task"), "capability": (["qa"], "item")},
        base="base",
        reference="ref",
        candidates=["cand"],
        keep=0.9,
        recover=0.7,
    )
    rows = out["candidates"]["cand"]["components"]
    assert rows["refusal"]["direction"] == "gain" and rows["refusal"]["share"] == pytest.approx(0.9)
    assert rows["capability"]["direction"] == "loss" and rows["capability"]["share"] == pytest.approx(0.75)
    for row in rows.values():
        low, high = row["share_ci"]
        assert low < row["share"] < high and row["n"] == 40 and row["shift_significant"]
    assert out["candidates"]["cand"]["meets"] is True
    assert out["candidates"]["cand"]["meets_at_lower_bound"] is False  # the intervals reach below the bars
    assert out["shifts"]["capability"]["shift"]["delta"] == pytest.approx(-0.5)


def test_a_lower_is_better_metric_gives_the_same_share():
    higher = component_share([np.array([[0.0, 1.0, 0.5]] * 10 + [[0.0, 0.0, 0.0]] * 10)])
    flipped = component_share([1.0 - np.array([[0.0, 1.0, 0.5]] * 10 + [[0.0, 0.0, 0.0]] * 10)])
    assert higher["share"] == pytest.approx(0.5) and flipped["share"] == pytest.approx(0.5)
    assert higher["direction"] == "gain" and flipped["direction"] == "loss"


def test_a_shift_that_is_not_significant_is_shown_but_not_read():
    # REF differs from BASE on 1 item of 30: no significant shift, and resamples without it have none
    base = [1] * 30
    ref = [1] * 29 + [0]
    cand = [1] * 30
    out = recovery(
        _table(base, ref, cand),
        {"t": True},
        {"t": (["t"], "task")},
        base="base",
        reference="ref",
        candidates=["cand"],
        keep=0.9,
        recover=0.7,
        n_boot=400,
    )
    row = out["candidates"]["cand"]["components"]["t"]
    assert row["share"] == pytest.approx(1.0) and not row["shift_significant"]
    assert row["reversed_draws"] > 0.05  # draws where the shift vanishes or reverses are reported
    assert out["candidates"]["cand"]["read"] == [] and out["candidates"]["cand"]["meets"] is None


def test_a_candidate_below_a_bar_does_not_meet_it():
    gain = _table([0] * 40, [1] * 40, [1] * 30 + [0] * 10)  # 0.75 kept < 0.9
    out = recovery(
        gain, {"t": True}, {"t": (["t"], "task")}, base="base", reference="ref", candidates=["cand"],
        keep=0.9, recover=0.7,
    )  # fmt: skip
    assert out["candidates"]["cand"]["meets"] is False


def test_only_items_all_three_scored_count_and_task_weighting_averages_task_means():
    a = _table([0] * 10, [1] * 10, [1] * 10, task="a")
    b = _table([0] * 30, [1] * 30, [0] * 30, task="b")
    del a[("cand", "a")]["i0"]  # the candidate left one item unscored
    tasks = {"a": True, "b": True}
    by_task = recovery(
        {**a, **b}, tasks, {"ab": (["a", "b"], "task")}, base="base", reference="ref", candidates=["cand"],
        keep=0.9, recover=0.7,
    )["candidates"]["cand"]["components"]["ab"]  # fmt: skip
    by_item = recovery(
        {**a, **b}, tasks, {"ab": (["a", "b"], "item")}, base="base", reference="ref", candidates=["cand"],
        keep=0.9, recover=0.7,
    )["candidates"]["cand"]["components"]["ab"]  # fmt: skip
    assert by_task["n"] == by_item["n"] == 39
    assert by_task["share"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert by_item["share"] == pytest.approx(9 / 39)


def _percentile_bootstrap(rows: np.ndarray, n_boot: int, rng) -> tuple[float, float]:
    draws = []
    for _ in range(n_boot):
        b, r, c = rows[rng.integers(0, len(rows), len(rows))].mean(0)
        if r != b:
            draws.append((c - b) / (r - b))
    return tuple(np.quantile(draws, [0.025, 0.975]))


def test_a_candidate_at_a_boundary_still_gets_an_interval_that_covers():
    """37 over-refusal prompts: BASE answers all, REF 60%, the candidate 97%. A candidate that answers
    all 37 (a third of the samples) gets [1, 1] from a percentile bootstrap, which misses the true
    share; the corner prior keeps the interval honest. Coverage over 150 samples."""
    rng = np.random.default_rng(3)
    truth = (0.97 - 0.6) / (1.0 - 0.6)  # loss recovered
    ours = plain = 0
    reps = 150
    for k in range(reps):
        ref = (rng.random(37) < 0.6).astype(float)
        cand = (rng.random(37) < 0.97).astype(float)
        rows = np.stack([np.ones(37), ref, cand], 1)
        row = component_share([rows], n_boot=500, seed=k)
        low, high = row["share_ci"]
        ours += low <= truth <= high
        r_low, r_high = _percentile_bootstrap(rows, 500, rng)
        plain += 1 - r_high <= truth <= 1 - r_low
    assert ours / reps >= 0.93
    assert plain / reps <= 0.8
