"""Per-block against a single α at fixed safety levels (Lin et al.'s question, issue #18)."""

from __future__ import annotations

import pytest

from tether.frontier.levels import best_reaching, level_verdict, pick_at_levels, safety_levels, summarise


def test_levels_are_the_midpoints_of_equal_slices_of_the_gain():
    levels = safety_levels(0.2, 0.7, 5)
    assert [f for f, _ in levels] == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert [t for _, t in levels] == pytest.approx([0.25, 0.35, 0.45, 0.55, 0.65])
    # a "safer" BASE (safety falls towards ALIGNED) places them downwards
    assert [t for _, t in safety_levels(0.7, 0.2, 1)] == pytest.approx([0.45])


def test_the_pick_is_the_most_capable_that_reaches_the_level():
    points = {"a": (0.5, 0.6), "b": (0.7, 0.5), "c": (0.9, 0.4), "d": (0.7, 0.5)}
    assert best_reaching(points, ["a", "b", "c"], 0.45) == "a"
    assert best_reaching(points, ["a", "b", "c"], 0.6) == "b"
    assert best_reaching(points, ["a", "b", "c"], 0.95) is None
    assert best_reaching(points, ["d", "b"], 0.6) == "d"  # a tie goes to the first listed
    assert best_reaching(points, ["x", "c"], 0.0) == "c"  # a name without a point takes no part


def test_picks_per_family_and_level():
    points = {
        "base": (0.2, 0.60),
        "interp-0.50": (0.45, 0.55),
        "aligned": (0.7, 0.40),
        "block-0.00-0.50-1.00": (0.5, 0.58),
        "block-1.00-1.00-0.50": (0.6, 0.45),
    }
    single = ["base", "interp-0.50", "aligned"]
    blocks = ["block-0.00-0.50-1.00", "block-1.00-1.00-0.50"]
    levels = pick_at_levels(points, single, blocks, base_safety=0.2, aligned_safety=0.7, count=3)
    thresholds = [lv["threshold"] for lv in levels]
    assert thresholds == pytest.approx([0.2 + 0.5 * f for f in (1 / 6, 0.5, 5 / 6)])
    assert [lv["single"] for lv in levels] == ["interp-0.50", "interp-0.50", "aligned"]
    # 0.45 reaches the second level (0.45) exactly; nothing per-block reaches the third (0.617)
    assert [lv["per_block"] for lv in levels] == ["block-0.00-0.50-1.00", "block-0.00-0.50-1.00", None]
    # a candidate without a (complete) point is never picked, though it may place the levels
    del points["interp-0.50"]
    again = pick_at_levels(points, single, blocks, base_safety=0.2, aligned_safety=0.7, count=3)
    assert [lv["single"] for lv in again] == ["aligned"] * 3


def _d(delta, significant=False):
    return {"delta": delta, "significant": significant}


@pytest.mark.parametrize(
    ("safety", "capability", "winner", "significant"),
    [
        (_d(0.0), _d(0.05, True), "per-block", True),
        (_d(0.02), _d(0.05), "per-block", False),
        (_d(-0.1, True), _d(-0.01), "single", True),
        (_d(0.1, True), _d(-0.1, True), "trade-off", False),
        (_d(0.0), _d(0.0), "tie", False),
        # better on one axis significantly but significantly worse on the other is no win
        (_d(0.1, True), _d(0.0), "per-block", True),
    ],
)
def test_verdict_reads_point_estimates_and_significance(safety, capability, winner, significant):
    v = level_verdict(safety, capability)
    assert (v["winner"], v["significant"]) == (winner, significant)


def test_verdict_without_both_axes_names_no_winner():
    assert level_verdict(_d(0.1, True), None)["winner"] is None
    assert level_verdict(_d(0.1), {"delta": None})["winner"] is None


def test_the_answer_needs_significant_wins_at_three_of_five_levels():
    def rows(*spec):
        return [
            {"winner": w, "significant": s, "single": "a", "per_block": f"b{k}"}
            for k, (w, s) in enumerate(spec)
        ]

    win, win_ns, lose = ("per-block", True), ("per-block", False), ("single", True)
    assert summarise(rows(win, win, win, lose, lose))["answer"] == "replicated"
    not_sig = summarise(rows(win, win, win_ns, lose, lose))
    assert not_sig["answer"].startswith("not established") and not_sig["per_block_wins"] == 3
    assert summarise(rows(win, win, lose, lose, lose))["answer"] == "not replicated"
    s = summarise(rows(win, lose, ("tie", False), (None, False), lose))
    assert (s["per_block_wins"], s["single_wins"], s["single_wins_significant"], s["needed"]) == (1, 2, 2, 3)
    assert "1 of 5" in s["reading"] and s["distinct_comparisons"] == 4  # the level without a winner: none
    same = [{"winner": "per-block", "significant": True, "single": "a", "per_block": "b"}] * 3
    assert summarise(same)["distinct_comparisons"] == 1
    tested = [
        {
            "winner": "trade-off",
            "per_block_minus_single": {"capability": {"mde": 0.2}, "safety": {"mde": 0.1}},
        },
        {
            "winner": "trade-off",
            "per_block_minus_single": {"capability": {"mde": 0.15}, "safety": {"mde": None}},
        },
    ]
    out = summarise(tested)
    assert out["mde"] == {"capability": 0.2, "safety": 0.1} and "0.20 on capability" in out["reading"]
