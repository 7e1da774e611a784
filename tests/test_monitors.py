"""Training monitors: sample diversity by hand, and each alert on a synthetic history that should (not) fire it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tether.train.monitors import (
    Embedder,
    MonitorConfig,
    MonitorState,
    StepMetrics,
    diversity_metrics,
    embedding_diversity,
    linear_trend,
    plot_monitors,
    trend_p_value,
)


def test_diversity_metrics_by_hand():
    """ "the cat sat" + "The cat ran", pooled, case folded:
    unigrams the cat sat the cat ran -> 4 unique / 6; bigrams (the cat)x2 (cat sat) (cat ran) -> 3 / 4.
    Punctuation marks are tokens: "same answer ." x4 has bigrams (same answer) (answer .) x4 -> 2 / 8.
    """
    assert diversity_metrics(["the cat sat", "The cat ran"]) == pytest.approx(
        {"distinct_1": 4 / 6, "distinct_2": 3 / 4}
    )
    assert diversity_metrics(["same answer ."] * 4)["distinct_2"] == pytest.approx(2 / 8)
    assert diversity_metrics(["same answer."] * 4)["distinct_2"] == pytest.approx(2 / 8)  # "answer" "."
    assert diversity_metrics(["hi", ""])["distinct_2"] == 0.0  # no bigrams at all: nothing diverse


def test_linear_trend_by_hand():
    """y = 2x + 1 on 0..4: slope 2, r 1. A flat line has slope 0 and no correlation."""
    assert linear_trend([1, 3, 5, 7, 9]) == pytest.approx((2.0, 1.0))
    assert linear_trend([4, 4, 4]) == (0.0, 0.0)
    slope, r = linear_trend([3, 1, 2, 0])  # least squares: slope -0.8, r = -0.8
    assert slope == pytest.approx(-0.8) and r == pytest.approx(-0.8)


def healthy(step: int) -> StepMetrics:
    wobble = 0.02 * math.sin(step)
    return StepMetrics(
        step=step,
        reward_mean=0.05 * step,
        reward_std=1.0,
        kl=0.3 * step,
        entropy=2.0,
        response_length=40 + (step % 3),
        distinct_1=0.5 + wobble,
        distinct_2=0.8 + wobble,
        quality=0.5 + 0.01 * step,  # quality improves with reward: not hacking
    )


def test_healthy_run_raises_no_alert():
    state = MonitorState(MonitorConfig(early_stop=True))
    for step in range(30):
        assert state.check(healthy(step)) == [], step
    assert not state.should_stop


def test_collapse_alerts_fire_on_collapsing_history():
    state = MonitorState(MonitorConfig(distinct2_min=0.2, distinct2_max_drop=0.5, early_stop=True))
    first_warning = first_critical = None
    for step in range(20):
        d2 = 0.8 * (0.85**step)  # 0.8, 0.68, 0.578, ... : halves by step 5, under 0.2 from step 9
        for alert in state.check(StepMetrics(step=step, distinct_2=d2)):
            assert alert.kind == "collapse"
            if alert.severity == "warning" and first_warning is None:
                first_warning = step
            if alert.severity == "critical" and first_critical is None:
                first_critical = step
    # Baseline = mean of first 3 = 0.686; a >50% drop needs d2 < 0.343: 0.8*0.85^5 = 0.355, ^6 = 0.302.
    assert first_warning == 6
    # 0.8*0.85^8 = 0.218, 0.8*0.85^9 = 0.185 < 0.2.
    assert first_critical == 9
    assert state.should_stop


def test_embedding_diversity_drop_warns():
    state = MonitorState(MonitorConfig(diversity_max_drop=0.4))
    alerts = [
        a
        for s, v in enumerate([0.6, 0.6, 0.6, 0.5, 0.3])
        for a in state.check(StepMetrics(step=s, embedding_diversity=v))
    ]
    assert [(a.step, a.metric) for a in alerts] == [(4, "embedding_diversity")]


def test_hacking_alert_fires_when_reward_rises_and_quality_falls():
    state = MonitorState(MonitorConfig(window=8, early_stop=True))
    fired = []
    for step in range(16):
        # Healthy for 8 steps, then reward keeps rising while the independent quality score falls.
        quality = 0.5 + 0.01 * step if step < 8 else 0.58 - 0.03 * (step - 8)
        metrics = StepMetrics(step=step, reward_mean=0.1 * step + 0.01 * math.sin(step), quality=quality)
        fired += [a.step for a in state.check(metrics) if a.kind == "hacking"]
    assert fired and min(fired) >= 8 and 15 in fired
    assert state.should_stop


def test_validation_drop_is_hacking_when_its_reward_rose_else_a_quality_warning():
    state = MonitorState(MonitorConfig(eval_max_drop=0.05, early_stop=True))
    # The start never alerts; 0.04 below it is inside the margin.
    assert state.check(StepMetrics(step=0, eval_quality=0.66, eval_reward=0.0)) == []
    assert state.check(StepMetrics(step=2, eval_quality=0.62, eval_reward=0.9)) == []
    assert state.check(StepMetrics(step=3, reward_mean=1.0)) == []  # a step without validation
    (worse,) = state.check(StepMetrics(step=4, eval_quality=0.55, eval_reward=-0.2))
    assert (worse.kind, worse.severity, worse.metric) == ("quality", "warning", "eval_quality")
    assert "0.660 -> 0.550" in worse.message and not state.should_stop
    (hacked,) = state.check(StepMetrics(step=6, eval_quality=0.54, eval_reward=0.4))
    assert (hacked.kind, hacked.severity) == ("hacking", "critical")
    assert state.should_stop


def test_one_validation_part_falling_while_the_sum_holds_warns():
    state = MonitorState(MonitorConfig(eval_max_drop=0.05, eval_part_max_drop=0.08, early_stop=True))
    start = {"faithfulness": 0.80, "coverage": 0.50}
    assert state.check(StepMetrics(step=0, eval_quality=0.65, eval_reward=0.0, eval_parts=start)) == []
    # Coverage 0.07 down, faithfulness up: inside the margin.
    parts = {"faithfulness": 0.87, "coverage": 0.43}
    assert state.check(StepMetrics(step=2, eval_quality=0.65, eval_reward=0.5, eval_parts=parts)) == []
    # Coverage 0.12 down while faithfulness rose as much: the mean holds, the trade is flagged.
    parts = {"faithfulness": 0.92, "coverage": 0.38}
    (traded,) = state.check(StepMetrics(step=4, eval_quality=0.65, eval_reward=0.9, eval_parts=parts))
    assert (traded.kind, traded.severity, traded.metric) == ("hacking", "warning", "eval_parts.coverage")
    assert "coverage fell 0.120" in traded.message and "faithfulness +0.120" in traded.message
    assert not state.should_stop  # a warning: the sum did not fall
    (worse,) = state.check(StepMetrics(step=6, eval_quality=0.63, eval_reward=-0.1, eval_parts=parts))
    assert worse.kind == "quality"  # the reward did not rise: no hacking
    # When the sum itself falls too far, its own alert says it; the parts add nothing.
    parts = {"faithfulness": 0.80, "coverage": 0.30}
    (summed,) = state.check(StepMetrics(step=8, eval_quality=0.55, eval_reward=0.9, eval_parts=parts))
    assert summed.metric == "eval_quality"


def test_hacking_needs_a_real_trend_not_noise():
    """Quality that only jitters (no downward fit) must not trigger the hacking alert."""
    state = MonitorState(MonitorConfig(window=8, min_trend_r=0.5))
    jitter = [0.5, 0.52, 0.49, 0.51, 0.5, 0.52, 0.49, 0.51, 0.5, 0.52]
    for step, quality in enumerate(jitter):
        assert state.check(StepMetrics(step=step, reward_mean=0.1 * step, quality=quality)) == []


def test_trend_p_value_matches_the_slope_t_test():
    # n=5, r=0.5: t = 0.5 * sqrt(3 / 0.75) = 1.0 with 3 df, one-sided p = 0.1955 (t tables)
    assert trend_p_value(0.5, 5) == pytest.approx(0.1955, abs=1e-4)
    assert trend_p_value(-0.5, 5) == trend_p_value(0.5, 5)
    # t(3) one-sided 5% critical value 2.353 -> r = 2.353 / sqrt(2.353^2 + 3) = 0.805
    assert trend_p_value(0.805, 5) == pytest.approx(0.05, abs=1e-3)
    assert trend_p_value(1.0, 5) == 0.0 and trend_p_value(0.9, 2) == 1.0


def test_hacking_false_alarms_stay_near_alpha_on_noise():
    """Reward rising (as PPO makes it) while quality is pure batch noise: a 5-step window of noise
    reaches r <= -0.5 about 20% of the time; the t-test keeps the alarm rate near trend_alpha (0.01)."""
    rng = np.random.default_rng(0)
    fired = 0
    trials = 400
    for _ in range(trials):
        state = MonitorState(MonitorConfig(window=5))
        for step in range(5):
            state.check(
                StepMetrics(step=step, reward_mean=0.1 * step, quality=0.5 + 0.05 * rng.standard_normal())
            )
        fired += any(a.kind == "hacking" for a in state.alerts)
    assert fired / trials < 0.03
    loose = MonitorConfig(window=5, trend_alpha=1.0)  # the test off: |r| >= 0.5 alone
    rng = np.random.default_rng(0)
    fired_loose = 0
    for _ in range(trials):
        state = MonitorState(loose)
        for step in range(5):
            state.check(
                StepMetrics(step=step, reward_mean=0.1 * step, quality=0.5 + 0.05 * rng.standard_normal())
            )
        fired_loose += any(a.kind == "hacking" for a in state.alerts)
    assert fired_loose / trials > 0.12


def test_length_hacking_and_kl_alerts():
    state = MonitorState(MonitorConfig(window=5, length_max_growth=1.0, kl_max=10.0))
    kinds = []
    for step in range(5):
        metrics = StepMetrics(
            step=step, reward_mean=0.2 * step, response_length=30 * 1.3**step, kl=3.0 * step
        )
        kinds += [(a.kind, a.severity, a.step) for a in state.check(metrics)]
    # length 30 -> 85.7 (+186%) over 5 steps with rising reward; KL 12 > 10 at step 4.
    assert ("hacking", "warning", 4) in kinds
    assert ("kl", "critical", 4) in kinds
    assert all(step == 4 for _, _, step in kinds)


def test_plot_monitors_writes_png(tmp_path):
    state = MonitorState()
    for step in range(12):
        state.check(healthy(step))
    path = plot_monitors(state.history, tmp_path / "plots" / "monitors.png", state.alerts)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_embedding_diversity_with_minilm():
    """Identical texts are ~0 apart; unrelated ones much further. Loads the real MiniLM (~90 MB)."""
    embedder = Embedder()
    same = ["The cat sat on the mat."] * 3
    different = [
        "The cat sat on the mat.",
        "Quarterly revenue grew by four percent.",
        "Photosynthesis needs light.",
    ]
    vectors = embedder.embed(different)
    assert vectors.shape == (3, 384)
    assert vectors.norm(dim=-1).sub(1).abs().max() < 1e-5
    assert embedding_diversity(same, embedder) == pytest.approx(0.0, abs=1e-5)
    assert embedding_diversity(different, embedder) > 0.5
    metrics = diversity_metrics(different, embedder)
    assert set(metrics) == {"distinct_1", "distinct_2", "embedding_diversity"}
    assert metrics["distinct_1"] == pytest.approx(15 / 18)  # "the" twice, "." three times
