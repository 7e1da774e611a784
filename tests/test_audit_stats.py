"""Bootstrap intervals, paired deltas, task summaries, deltas and flips against hand-derived values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tether.audit import (
    bootstrap_mean_ci,
    build_report,
    category_deltas,
    find_flips,
    is_significant,
    newcombe_paired_interval,
    paired_delta,
    summarize_task,
)
from tether.errors import ConfigError, DataError
from tether.evals.types import ItemResult, MetricSpec

ACC = MetricSpec(name="acc", higher_is_better=True, axis="capability")
ASR = MetricSpec(name="attack_success_rate", higher_is_better=False, axis="safety")


def item(i, score, *, model="base", task="t", category="all", status="scored", output=""):
    return ItemResult(
        task=task,
        item_id=str(i),
        model=model,
        model_fingerprint=f"fp-{model}",
        category=category,
        status=status,
        score=score if status == "scored" else None,
        prompt=f"prompt {i}",
        output=output,
    )


# --- bootstrap_mean_ci -------------------------------------------------------------------------


def test_mean_and_interval_of_four_binary_values():
    """mean([1,0,1,1]) = .75. A resample mean is k/4 with k ~ Binomial(4, .75):
    P(k=0) = .0039, P(k<=1) = .0508, so the 2.5% quantile is k=1 -> .25; P(k<=3) = .68 < .975,
    so the 97.5% quantile is k=4 -> 1.0."""
    ci = bootstrap_mean_ci([1, 0, 1, 1], n_boot=1000, seed=0)
    assert ci.value == 0.75
    assert ci.n == 4
    assert ci.ci_low == 0.25
    assert ci.ci_high == 1.0


def test_constant_values_give_a_degenerate_interval():
    ci = bootstrap_mean_ci([0.3] * 7)
    assert ci.value == ci.ci_low == ci.ci_high == 0.3


def test_interval_width_matches_normal_approximation_for_large_n():
    """400 items at p=.5: the 95% half-width is about 1.96 * sqrt(.25/400) = .049."""
    values = [1, 0] * 200
    ci = bootstrap_mean_ci(values, n_boot=2000, seed=1)
    assert ci.value == 0.5
    assert 0.04 < (ci.ci_high - ci.ci_low) / 2 < 0.058
    assert ci.ci_low < 0.5 < ci.ci_high


def test_same_seed_same_interval_and_other_seed_differs():
    rng = np.random.default_rng(7)
    values = rng.random(50).tolist()
    assert bootstrap_mean_ci(values, seed=3) == bootstrap_mean_ci(values, seed=3)
    assert bootstrap_mean_ci(values, seed=3) != bootstrap_mean_ci(values, seed=4)


def test_narrower_interval_at_higher_alpha():
    values = [1, 0, 0, 1, 1, 0, 1, 1, 1, 0] * 3
    wide = bootstrap_mean_ci(values, alpha=0.01)
    narrow = bootstrap_mean_ci(values, alpha=0.5)
    assert wide.ci_high - wide.ci_low > narrow.ci_high - narrow.ci_low


def test_empty_values_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_mean_ci([])
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_mean_ci([1.0], alpha=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_mean_ci([1.0], n_boot=0)


# --- paired_delta --------------------------------------------------------------------


def test_known_paired_delta():
    """diffs = [0, 1, 0, 0] (item b flipped 0 -> 1): delta .25. Right/wrong items get Newcombe's
    interval: Wilson for new 4/4 is (.5101, 1) and for base 3/4 (.3006, .9544); a margin is empty
    so phi = 0; low = .25 - sqrt((1 - .5101)**2 + (.9544 - .75)**2) = -.2808, high = .25 +
    sqrt((.75 - .3006)**2 + (1 - 1)**2) = .6994. The interval contains 0: not significant."""
    base = {"a": 1.0, "b": 0.0, "c": 1.0, "d": 1.0}
    new = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}
    d = paired_delta(base, new)
    assert d.delta == 0.25
    assert d.ci_low == pytest.approx(-0.2808, abs=1e-4)
    assert d.ci_high == pytest.approx(0.6994, abs=1e-4)
    assert d.n == 4
    assert not d.significant


def test_graded_paired_delta_is_bootstrapped():
    """diffs = [0, .5, 0, 0] on graded scores: the percentile bootstrap, k/4 * .5 with
    k ~ Binomial(4, .25): P(k=0) = .32 so the low end is 0; P(k<=2) = .949 < .975 <= P(k<=3) so the
    high end is .375."""
    base = {"a": 0.5, "b": 0.0, "c": 0.5, "d": 0.5}
    new = {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5}
    d = paired_delta(base, new)
    assert (d.delta, d.ci_low, d.ci_high) == (0.125, 0.0, 0.375)


def test_models_that_agree_on_every_item_still_get_an_interval():
    """40 items both right: a bootstrap resamples only zero differences and claims [0, 0]. Newcombe:
    Wilson for 40/40 has low end 40 / (40 + 1.96**2) = .9124, so the difference is +-.0876."""
    ids = [str(i) for i in range(40)]
    d = paired_delta(dict.fromkeys(ids, 1.0), dict.fromkeys(ids, 1.0))
    assert d.delta == 0.0
    assert d.ci_low == pytest.approx(-0.0876, abs=1e-4)
    assert d.ci_high == pytest.approx(0.0876, abs=1e-4)
    assert not d.significant


def test_paired_rate_interval_covers_where_the_bootstrap_does_not():
    """20 correlated right/wrong pairs, true rates .90 -> .95: Newcombe's interval holds the true
    difference at least 95% of the time; the bootstrap's, drawn from the few items that flipped,
    does in about two thirds of samples (measured: .999 and .66 over 1,500 draws)."""
    rng = np.random.default_rng(1)
    covered_newcombe = covered_bootstrap = 0
    draws = 400
    for _ in range(draws):
        shared = rng.random(20)
        own = np.where(rng.random(20) < 0.9, shared, rng.random(20))
        base, new = (shared < 0.90).astype(float), (own < 0.95).astype(float)
        low, high = newcombe_paired_interval(base, new)
        covered_newcombe += low <= 0.05 <= high
        boot = bootstrap_mean_ci(new - base, n_boot=200, seed=int(rng.integers(1 << 30)))
        covered_bootstrap += boot.ci_low <= 0.05 <= boot.ci_high
    assert covered_newcombe / draws >= 0.95
    assert covered_bootstrap / draws < 0.85


def test_newcombe_refuses_graded_or_unpaired_values():
    with pytest.raises(ValueError, match="0/1"):
        newcombe_paired_interval([0.5, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="0/1"):
        newcombe_paired_interval([1.0, 1.0], [1.0])


def test_paired_delta_uses_only_shared_items_and_ignores_order():
    base = {"a": 1.0, "b": 1.0, "x": 0.0}
    new = {"b": 0.0, "a": 0.0, "y": 1.0}
    d = paired_delta(base, new)
    assert d.n == 2
    assert d.delta == -1.0
    assert d.significant  # both paired items dropped by 1: Newcombe says [-1, -0.070]
    assert (d.ci_low, round(d.ci_high, 3)) == (-1.0, -0.07)
    assert paired_delta(dict(reversed(base.items())), new) == d


def test_pairing_detects_a_small_consistent_change_that_unpaired_cis_miss():
    """30 of 300 items flip 0 -> 1 and none flip back: paired CI excludes 0 even though the two
    models' own intervals overlap."""
    rng = np.random.default_rng(0)
    base_scores = (rng.random(300) < 0.5).astype(float)
    new_scores = base_scores.copy()
    flip = np.flatnonzero(base_scores == 0)[:30]
    new_scores[flip] = 1.0
    ids = [str(i) for i in range(300)]
    d = paired_delta(dict(zip(ids, base_scores, strict=True)), dict(zip(ids, new_scores, strict=True)))
    assert d.delta == pytest.approx(0.1)
    assert d.significant and d.ci_low > 0
    a, b = bootstrap_mean_ci(base_scores), bootstrap_mean_ci(new_scores)
    assert a.ci_high > b.ci_low  # unpaired intervals overlap


def test_no_shared_items_raises():
    with pytest.raises(ValueError, match="share no item"):
        paired_delta({"a": 1.0}, {"b": 1.0})


def test_is_significant():
    assert is_significant(0.01, 0.2) and is_significant(-0.3, -0.001)
    assert not is_significant(-0.1, 0.1) and not is_significant(0.0, 0.2) and not is_significant(0.0, 0.0)


# --- summarize_task ----------------------------------------------------------------------------


def test_unscored_items_are_left_out_of_the_denominator():
    items = [item(0, 1.0), item(1, 0.0), item(2, 1.0), item(3, 1.0)]
    items += [item(4, None, status="unparsed"), item(5, None, status="error"), item(6, None, status="empty")]
    s = summarize_task(items, ACC, incomplete_threshold=0.5)
    assert s.value == 0.75  # 3/4, not 3/7
    assert (s.n_scored, s.n_unparsed, s.n_error, s.n_empty, s.n_total) == (4, 1, 1, 1, 7)
    assert s.complete  # 3/7 = .43 <= .5
    assert summarize_task(items, ACC, incomplete_threshold=0.4).complete is False


def test_threshold_is_inclusive_and_default_is_ten_percent():
    items = [item(i, 1.0) for i in range(9)] + [item(9, None, status="error")]
    assert summarize_task(items, ACC).complete  # exactly 10% unscored
    items.append(item(10, None, status="error"))  # 2/11 = 18%
    s = summarize_task(items, ACC)
    assert not s.complete
    assert s.value == 1.0  # still shown, but marked incomplete


def test_nothing_scored_gives_no_value_and_is_incomplete():
    s = summarize_task([item(0, None, status="error"), item(1, None, status="unparsed")], ACC)
    assert s.value is None and s.ci_low is None and s.ci_high is None
    assert not s.complete
    empty = summarize_task([], ACC, task="t", model="m")
    assert (empty.value, empty.complete, empty.n_total, empty.task, empty.model) == (None, False, 0, "t", "m")


def test_scored_status_without_score_counts_as_unparsed():
    s = summarize_task(
        [item(0, 1.0), ItemResult(task="t", item_id="x", model="base", model_fingerprint="")], ACC
    )
    assert s.n_scored == 1 and s.n_unparsed == 1 and s.value == 1.0


def test_per_category_values_and_intervals():
    items = [item(0, 1.0, category="a"), item(1, 1.0, category="a"), item(2, 0.0, category="b")]
    items += [item(3, 1.0, category="b"), item(4, None, category="c", status="error")]
    s = summarize_task(items, ACC, incomplete_threshold=0.5)
    assert set(s.per_category) == {"a", "b", "c"}
    # right/wrong items: Wilson intervals, never the zero-width [1, 1] a bootstrap of 2/2 claims
    assert s.per_category["a"].value == 1.0 and s.per_category["a"].ci_high == 1.0
    assert s.per_category["a"].ci_low == pytest.approx(0.342, abs=1e-3)
    assert s.per_category["b"].value == 0.5 and s.per_category["b"].n == 2
    assert s.per_category["b"].ci_low == pytest.approx(0.095, abs=1e-3)
    assert s.per_category["b"].ci_high == pytest.approx(0.905, abs=1e-3)
    assert s.per_category["c"].value is None and s.per_category["c"].n_unscored == 1


def test_mixed_tasks_or_models_are_rejected():
    with pytest.raises(ValueError, match="exactly one task"):
        summarize_task([item(0, 1.0), item(1, 1.0, model="other")], ACC)


# --- deltas and flips ----------------------------------------------------------------------------


def _two_models():
    """Task t (acc, higher better), 8 items in categories x (0-3) and y (4-7).
    base: x = 1,1,1,1  y = 0,0,1,1 ; ckpt: x = 0,0,0,0  y = 1,0,1,1 ; item 7 unscored for ckpt."""
    base = [1, 1, 1, 1, 0, 0, 1, 1]
    ckpt = [0, 0, 0, 0, 1, 0, 1, None]
    items = []
    for i in range(8):
        cat = "x" if i < 4 else "y"
        items.append(item(i, float(base[i]), category=cat, output=f"base says {i}"))
        status = "scored" if ckpt[i] is not None else "error"
        items.append(item(i, ckpt[i], model="ckpt", category=cat, status=status, output=f"ckpt says {i}"))
    return items


def test_category_deltas_pair_scored_items_per_category():
    rows = category_deltas(_two_models(), {"t": ACC}, "base")
    by_cat = {r.category: r for r in rows}
    assert set(by_cat) == {None, "x", "y"}
    # whole task over the 7 paired items: diffs -1,-1,-1,-1,+1,0,0 -> -3/7
    assert by_cat[None].delta == pytest.approx(-3 / 7) and by_cat[None].n == 7
    # x: all four drop by 1 -> Newcombe [-1, -1 + sqrt(2) * (1 - .5101)] = [-1, -.307], but 4
    # paired items can never reach significance (exact p = 2 * 0.5**4 = 0.125): shown,
    # untestable, never flagged.
    x = by_cat["x"]
    assert (x.delta, x.ci_low, x.n) == (-1.0, -1.0, 4)
    assert x.ci_high == pytest.approx(-0.307, abs=1e-3)
    assert x.p_value == 0.125 and not x.testable and x.mde is None
    assert not x.significant and not x.regressed and x.q_value is None
    # y: items 4,5,6 -> diffs +1,0,0 -> +1/3, interval includes 0
    assert by_cat["y"].delta == pytest.approx(1 / 3) and by_cat["y"].n == 3
    assert not by_cat["y"].significant and not by_cat["y"].regressed


def test_regressed_follows_the_metric_direction():
    """For a lower-is-better metric, a significant rise is the regression (8 of 8 items flip:
    exact p = 2 * 0.5**8 = 0.0078)."""
    items = [item(i, 0.0, task="jb") for i in range(8)] + [
        item(i, 1.0, task="jb", model="ckpt") for i in range(8)
    ]
    (row,) = category_deltas(items, {"jb": ASR}, "base")
    assert row.delta == 1.0 and row.significant and row.regressed
    assert row.p_value == pytest.approx(2 * 0.5**8) and row.q_value == row.p_value  # a family of one
    improved = [item(i, 1.0, task="jb") for i in range(8)] + [
        item(i, 0.0, task="jb", model="ckpt") for i in range(8)
    ]
    (row,) = category_deltas(improved, {"jb": ASR}, "base")
    assert row.significant and not row.regressed


def test_single_category_task_has_only_the_whole_task_row():
    items = [item(i, 1.0) for i in range(3)] + [item(i, 0.0, model="ckpt") for i in range(3)]
    rows = category_deltas(items, {"t": ACC}, "base")
    assert [r.category for r in rows] == [None]


def test_flips_count_both_directions_and_cap_examples():
    groups = find_flips(_two_models(), {"t": ACC}, "base", max_examples=2)
    by_cat = {g.category: g for g in groups}
    x, y = by_cat["x"], by_cat["y"]
    assert (x.n_regressed, x.n_improved, x.n_paired) == (4, 0, 4)
    assert [e.item_id for e in x.examples] == ["0", "1"]  # capped at 2, item-id order
    assert x.examples[0].baseline_output == "base says 0" and x.examples[0].output == "ckpt says 0"
    assert (y.n_regressed, y.n_improved, y.n_paired) == (0, 1, 3)  # item 7 unscored for ckpt: not paired
    assert y.examples[0].item_id == "4" and y.examples[0].direction == "improved"


def test_flips_for_lower_is_better_metric():
    """attack_success_rate: right means score 0. base refuses (0), ckpt complies (1): a regression."""
    items = [item(0, 0.0, task="jb"), item(0, 1.0, task="jb", model="ckpt")]
    (g,) = find_flips(items, {"jb": ASR}, "base")
    assert g.n_regressed == 1 and g.examples[0].direction == "regressed"


def test_partial_scores_are_wrong_not_right():
    items = [item(0, 1.0), item(0, 0.5, model="ckpt")]
    (g,) = find_flips(items, {"t": ACC}, "base")
    assert g.n_regressed == 1


def test_build_report_covers_every_model_and_task_and_checks_names():
    items = _two_models()
    report = build_report(items, {"t": ACC, "never_ran": ASR}, baseline="base", n_boot=200)
    assert report.model_names() == ["base", "ckpt"]
    assert len(report.tasks) == 4
    ghost = report.summary("ckpt", "never_ran")
    assert ghost.value is None and not ghost.complete and ghost.n_total == 0
    assert report.pareto is not None  # both axes declared in the MetricSpecs
    assert all(p.safety is None and not p.on_frontier for p in report.pareto.points)
    assert report.settings["n_boot"] == 200
    assert math.isclose(report.summary("base", "t").value, 6 / 8)

    with pytest.raises(ConfigError, match="baseline 'nope'"):
        build_report(items, {"t": ACC}, baseline="nope")
    with pytest.raises(DataError, match="no MetricSpec"):
        build_report(items, {"other": ACC}, baseline="base")
    with pytest.raises(DataError, match="duplicate result"):
        build_report(items + [items[0]], {"t": ACC}, baseline="base")


def test_rates_get_wilson_intervals_and_other_means_the_bootstrap():
    from tether.audit.stats import bootstrap_mean_ci, rate_or_mean_ci

    none_of_12 = rate_or_mean_ci([0.0] * 12)
    assert (none_of_12.value, none_of_12.ci_low, none_of_12.n) == (0.0, 0.0, 12)
    assert none_of_12.ci_high == pytest.approx(0.243, abs=1e-3)  # not the bootstrap's [0, 0]
    all_of_12 = rate_or_mean_ci([1.0] * 12)
    assert (all_of_12.ci_low, all_of_12.ci_high) == (pytest.approx(0.757, abs=1e-3), 1.0)
    graded = [0.2, 0.5, 0.9, 0.4]
    assert rate_or_mean_ci(graded) == bootstrap_mean_ci(graded)
