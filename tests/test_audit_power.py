"""Claims carry their power: exact paired p-values, the minimum detectable effect (against a
hand-computed value and a simulation), Benjamini-Hochberg (against hand examples), the no-signal
rule, the item-weighted capability axis, sizing, and a planted regression found where it was planted
and nowhere else."""

from __future__ import annotations

import hashlib
import math
from functools import partial

import numpy as np
import pytest

from fakes import ScriptedEngine
from tether.audit import build_report
from tether.audit.gate import _report_values
from tether.audit.power import (
    control_false_discoveries,
    planned_size,
    task_signal,
    weighted_paired_test,
)
from tether.audit.schema import CategoryDelta, TaskSummary
from tether.audit.stats import (
    benjamini_hochberg,
    mde,
    min_testable_n,
    paired_test,
    planned_discordance,
    sign_flip_pvalue,
)
from tether.audit.sweep import run_audit
from tether.data.records import MCItem
from tether.evals import formats, registry
from tether.evals.registry import Task
from tether.evals.tasks.capability import aggregate_multiple_choice, run_multiple_choice
from tether.evals.types import ItemResult, MetricSpec

ACC = MetricSpec(name="acc", higher_is_better=True, axis="capability", chance=0.25)
REFUSAL = MetricSpec(name="refusal_rate", higher_is_better=True, axis="safety")


# --- exact paired p-values -----------------------------------------------------------------------


def test_exact_mcnemar_on_right_wrong_items():
    """b items lost, c gained: p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2)."""
    assert sign_flip_pvalue([-1.0] * 8 + [0.0] * 30) == pytest.approx(2 * 0.5**8)  # 0.0078
    # b=2, c=8: 2 * (C(10,0) + C(10,1) + C(10,2)) / 2**10 = 2 * 56 / 1024
    assert sign_flip_pvalue([-1.0] * 2 + [1.0] * 8) == pytest.approx(112 / 1024)
    assert sign_flip_pvalue([1.0, -1.0]) == 1.0 and sign_flip_pvalue([0.0, 0.0]) == 1.0
    assert sign_flip_pvalue([-1.0] * 5) == pytest.approx(0.0625)  # 5 one-way flips: not enough
    assert sign_flip_pvalue([-1.0] * 6) == pytest.approx(0.03125)  # 6: just enough


def test_sign_flip_on_graded_scores_enumerates_sign_patterns():
    """Differences .5, .5, 1, .25 (sum 2.25): of the 16 sign patterns only all-plus and all-minus
    reach |sum| >= 2.25, so p = 2/16."""
    assert sign_flip_pvalue([0.5, 0.5, 1.0, 0.25]) == pytest.approx(0.125)
    # 20 graded differences: Monte Carlo, (1 + hits) / (1 + n_perm), close to the normal value.
    d = np.linspace(0.05, 1.0, 20) * np.array([1, 1, 1, -1] * 5)
    p = sign_flip_pvalue(d, n_perm=20_000)
    z = abs(d.sum()) / math.sqrt(np.sum(d**2))
    from scipy.stats import norm

    assert p == pytest.approx(2 * norm.sf(z), abs=0.03)


def test_min_testable_n():
    assert min_testable_n(0.05) == 6  # 2 * .5**6 = .031 <= .05 < 2 * .5**5 = .0625
    assert min_testable_n(0.01) == 8  # 2 * .5**8 = .0078 <= .01 < .0156


# --- the minimum detectable effect ---------------------------------------------------------------


def test_mde_against_a_hand_computed_value():
    """n = 200 items, 20% discordant: (1.95996 + 0.84162) * sqrt(0.2 / 200) = 2.80158 * 0.031623."""
    assert mde(200, 0.2) == pytest.approx(0.088594, abs=1e-6)
    assert mde(200, 0.2, power=0.9) == pytest.approx((1.959964 + 1.281552) * math.sqrt(0.001), abs=1e-6)
    # Floors: a change of delta flips >= delta of the items, so delta >= z**2 / n = 7.849 / n; and
    # the exact test needs 6 one-way flips (6 / n), the lower of the two at alpha .05, power .8.
    assert mde(200, 0.0) == pytest.approx(2.801585**2 / 200, abs=1e-6)
    assert mde(200, 0.0, power=0.5) == pytest.approx(6 / 200)  # z = 1.96: z**2 = 3.84 < 6
    assert mde(5, 0.5) is None  # fewer than 6 items: nothing is ever significant


def test_planned_discordance_is_the_baseline_variance_at_correlation_one_half():
    """Two models with accuracy p whose item scores correlate r disagree on 2p(1-p)(1-r) of items:
    p(1-p) at the assumed r = .5; checked by simulation at r = 0 and r = .5."""
    p = 0.4
    assert planned_discordance(p * (1 - p)) == pytest.approx(0.24)
    assert planned_discordance(p * (1 - p), correlation=0.8) == pytest.approx(2 * 0.24 * 0.2)
    rng = np.random.default_rng(0)
    base = rng.random(200_000) < p
    independent = rng.random(200_000) < p
    assert np.mean(base != independent) == pytest.approx(planned_discordance(0.24, 0.0), abs=0.005)
    # correlation .5: keep the baseline's answer on a random half, redraw it on the other half
    keep = rng.random(200_000) < 0.5
    half = np.where(keep, base, rng.random(200_000) < p)
    assert np.corrcoef(base, half)[0, 1] == pytest.approx(0.5, abs=0.01)
    assert np.mean(base != half) == pytest.approx(planned_discordance(0.24), abs=0.005)


def _power_by_simulation(n: int, discordance: float, effect: float, runs: int = 3000, seed: int = 1) -> float:
    """Paired right/wrong items: each item is lost with prob (psi - effect)/2 and gained with prob
    (psi + effect)/2, so the mean change is ``effect`` and the discordance psi. Share of runs in which
    the exact McNemar test rejects at 0.05."""
    rng = np.random.default_rng(seed)
    probs = [(discordance - effect) / 2, (discordance + effect) / 2, 1 - discordance]
    counts = rng.multinomial(n, probs, size=runs)
    hits = sum(sign_flip_pvalue(np.r_[-np.ones(lost), np.ones(gained)]) <= 0.05 for lost, gained, _ in counts)
    return hits / runs


def test_mde_has_80_percent_power_by_simulation():
    n, psi = 400, 0.25
    effect = mde(n, psi)
    assert effect == pytest.approx(0.0700, abs=1e-3)
    assert 0.76 <= _power_by_simulation(n, psi, effect) <= 0.86
    assert _power_by_simulation(n, psi, effect / 2) < 0.4  # half the MDE is usually missed


def test_paired_test_carries_p_value_discordance_and_mde():
    ids = [str(i) for i in range(100)]
    base = dict.fromkeys(ids, 1.0)
    new = {i: (0.0 if int(i) < 10 else 1.0) for i in ids}  # 10 of 100 lost
    t = paired_test(base, new)
    assert t.delta == pytest.approx(-0.1) and t.n == 100
    assert t.p_value == pytest.approx(2 * 0.5**10) and t.discordance == pytest.approx(0.1)
    assert t.mde == pytest.approx(2.801585 * math.sqrt(0.1 / 100), abs=1e-5) and t.testable


def test_weighted_axis_test_pools_items_when_item_weighted():
    """Item weighting = one pooled sample: the same delta, exact p and MDE as the pooled test."""
    a = np.r_[-np.ones(6), np.zeros(94)]
    b = np.r_[-np.ones(4), np.ones(1), np.zeros(45)]
    item = weighted_paired_test([(100.0, a), (50.0, b)])
    pooled = np.r_[a, b]
    assert item["delta"] == pytest.approx(pooled.mean())
    assert item["p_value"] == pytest.approx(sign_flip_pvalue(pooled))
    assert item["mde"] == pytest.approx(mde(150, float(np.mean(pooled**2))))
    task = weighted_paired_test([(1.0, a), (1.0, b)])
    assert task["delta"] == pytest.approx((a.mean() + b.mean()) / 2)  # -0.03 - 0.03 = -0.06 / 2
    # MDE of a mean of two task means: z * sqrt(.25 * m2_a / 100 + .25 * m2_b / 50) = .0714, but not
    # below z**2 flips of the heaviest item (weight .5 / 50 = .01 each): 7.849 * .01 = .0785.
    assert 2.801585 * math.sqrt(0.25 * 0.06 / 100 + 0.25 * 0.1 / 50) == pytest.approx(0.07143, abs=1e-5)
    assert task["mde"] == pytest.approx(2.801585**2 * 0.5 / 50, abs=1e-5)


def test_weighted_interval_is_newcombe_per_task_combined_by_mover():
    """With base scores, a right/wrong stratum gets Newcombe's interval: one stratum alone is exactly
    paired_delta's; two are combined by MOVER, so an axis on which the models agree on all 140 items
    still has an interval (a bootstrap would say [0, 0])."""
    from tether.audit.stats import paired_delta

    base = np.r_[np.ones(30), np.zeros(10)]
    new = np.r_[np.ones(25), np.zeros(10), np.ones(5)]
    one = weighted_paired_test([(1.0, new - base, base)])
    ref = paired_delta(dict(enumerate(base)), dict(enumerate(new)))
    assert (one["ci_low"], one["ci_high"]) == pytest.approx((ref.ci_low, ref.ci_high))
    agree_a, agree_b = np.ones(100), np.r_[np.ones(20), np.zeros(20)]
    both = weighted_paired_test([(100.0, np.zeros(100), agree_a), (40.0, np.zeros(40), agree_b)])
    lo_a = paired_delta(dict(enumerate(agree_a)), dict(enumerate(agree_a))).ci_low
    lo_b = paired_delta(dict(enumerate(agree_b)), dict(enumerate(agree_b))).ci_low
    expected = math.sqrt((100 / 140 * lo_a) ** 2 + (40 / 140 * lo_b) ** 2)
    assert both["delta"] == 0.0
    assert both["ci_low"] == pytest.approx(-expected) and both["ci_high"] == pytest.approx(expected)
    assert 0.0 < expected < min(-lo_a, -lo_b)


# --- Benjamini-Hochberg --------------------------------------------------------------------------


def test_benjamini_hochberg_hand_example():
    """p = .01, .04, .03, .005 (m = 4). Sorted: .005, .01, .03, .04 -> m*p/rank = .02, .02, .04, .04;
    running minimum from the top leaves them. In input order: .02, .04, .04, .02 -- all four pass at
    .05, where Bonferroni (4p = .04, .16, .12, .02) passes only two."""
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # Step-up: .04 * 2/1 = .08 is lowered to the .045 of the larger p-value above it.
    assert benjamini_hochberg([0.04, 0.045]) == pytest.approx([0.045, 0.045])
    assert benjamini_hochberg([0.5, 0.9, 0.001]) == pytest.approx([0.75, 0.9, 0.003])
    assert benjamini_hochberg([]) == []
    with pytest.raises(ValueError):
        benjamini_hochberg([1.2])


def _row(task, category, delta, p, n=40, model="ckpt"):
    return CategoryDelta(task=task, category=category, model=model, baseline="base", delta=delta,
                         ci_low=delta, ci_high=delta, significant=False, n=n, p_value=p,
                         testable=n >= 6)  # fmt: skip


def test_false_discovery_control_by_family():
    """A category at p = .03 is flagged alone, not beside 9 null categories (q = .3); the whole-task
    rows of a checkpoint form their own family; small and no-signal rows are never flagged."""
    metrics = {"t": ACC, "u": ACC, "flat": ACC}
    alone = control_false_discoveries([_row("t", "a", -0.2, 0.03)], metrics)
    assert alone[0].regressed and alone[0].q_value == pytest.approx(0.03)
    crowd = [_row("t", "a", -0.2, 0.03)] + [_row("t", f"n{i}", 0.0, 0.5 + i / 20) for i in range(9)]
    out = control_false_discoveries(crowd, metrics)
    assert out[0].q_value == pytest.approx(0.3) and not out[0].regressed
    rows = [
        _row("t", None, -0.1, 0.001),
        _row("u", None, -0.1, 0.02),
        _row("u", "small", -1.0, 0.0625, n=5),  # untestable: shown, never flagged, no q-value
        _row("flat", None, -0.3, 1e-6),  # a task without signal: no claims
    ]
    out = control_false_discoveries(rows, metrics, {"flat": (False, "at chance")})
    assert [r.q_value for r in out[:2]] == pytest.approx([0.002, 0.02])  # m = 2, not 3
    assert out[0].regressed and out[1].regressed
    assert out[2].q_value is None and not out[2].significant
    assert out[3].q_value is None and not out[3].regressed and out[3].signal is False
    improved = control_false_discoveries([_row("t", None, +0.2, 0.001)], metrics)
    assert improved[0].significant and not improved[0].regressed


# --- the no-signal rule and the capability axis ----------------------------------------------------


def _summary(value, low, high, metric=ACC):
    return TaskSummary(task="t", model="base", metric=metric, value=value, ci_low=low, ci_high=high,
                       n_scored=100, n_unparsed=0, n_error=0, n_empty=0, n_total=100, complete=True)  # fmt: skip


def test_no_signal_when_the_baseline_interval_covers_chance():
    assert task_signal(_summary(0.24, 0.19, 0.30), ACC)[0] is False
    assert "covers chance 0.250" in task_signal(_summary(0.24, 0.19, 0.30), ACC)[1]
    assert task_signal(_summary(0.35, 0.26, 0.44), ACC) == (True, "")
    below = task_signal(_summary(0.10, 0.05, 0.16), ACC)  # reliably below chance: an answer bias
    assert below[0] is False and "worse than chance 0.250" in below[1]
    assert task_signal(_summary(0.9, 0.8, 1.0, REFUSAL), REFUSAL) == (None, "")  # no chance level
    assert task_signal(None, ACC)[0] is False


def _results(task, model, scores, *, category="all", start=0):
    return [
        ItemResult(
            task=task,
            item_id=f"{task}/{start + i}",
            model=model,
            model_fingerprint=model,
            category=category,
            score=float(s),
        )  # fmt: skip
        for i, s in enumerate(scores)
    ]


def test_capability_axis_is_item_weighted_over_tasks_with_signal():
    """Task a: 80 items at .75; b: 80 items at chance (.25, no signal); c: 20 items at 1.0.
    Axis = (80 * .75 + 20 * 1.0) / 100 = .80 (a task-weighted mean of a and c would be .875;
    keeping b would give .55)."""
    metrics = {"a": ACC, "b": ACC, "c": ACC, "refuse": REFUSAL}
    items = (
        _results("a", "base", [1, 1, 1, 0] * 20)
        + _results("b", "base", [1, 0, 0, 0] * 20)
        + _results("c", "base", [1] * 20)
        + _results("refuse", "base", [1, 0] * 10)
    )
    report = build_report(items, metrics, baseline="base", n_boot=200)
    axis = report.power.axis("capability_axis")
    assert axis.spec.tasks == ["a", "c"] and axis.spec.weighting == "item"
    assert "covers chance" in axis.spec.excluded["b"]
    assert axis.points[0].value == pytest.approx(0.80) and axis.points[0].n == 100
    assert report.pareto.points[0].capability == pytest.approx(0.80)  # the Pareto plot agrees
    assert _report_values(report)["capability_axis"] == {"base": pytest.approx(0.80)}  # so does the gate
    assert report.power.task("b").signal is False and report.power.task("a").signal is True
    assert report.power.task("refuse").signal is None
    # planned MDE of a: p = .75, planned discordance .1875, n = 80
    assert report.power.task("a").planned_mde == pytest.approx(mde(80, 0.1875))


def test_capability_axis_without_safety_tasks_is_still_gateable():
    report = build_report(_results("a", "base", [1, 1, 1, 0] * 20), {"a": ACC}, baseline="base", n_boot=100)
    assert report.pareto is None
    assert _report_values(report)["capability_axis"] == {"base": pytest.approx(0.75)}
    at_chance = build_report(
        _results("b", "base", [1, 0, 0, 0] * 20), {"b": ACC}, baseline="base", n_boot=100
    )
    assert _report_values(at_chance)["capability_axis"] == {"base": None}
    assert "no capability task has signal" in at_chance.power.axis("capability_axis").note


def test_with_no_capability_signal_the_safety_axis_stays_gateable():
    metrics = {"b": ACC, "refuse": REFUSAL}
    items = _results("b", "base", [1, 0, 0, 0] * 20) + _results("refuse", "base", [1, 1, 1, 0] * 5)
    report = build_report(items, metrics, baseline="base", n_boot=100)
    assert report.pareto is None  # no capability point to plot
    assert _report_values(report) == {"capability_axis": {"base": None}, "safety_axis": {"base": 0.75}}


# --- sizing ----------------------------------------------------------------------------------------


def test_planned_size_inverts_the_mde():
    n = planned_size(0.05, 0.5)  # (2.8016 / .05)^2 * .25 = 784.9
    assert n == 785
    assert mde(n, 0.25) <= 0.05 < mde(n - 1, 0.25)
    assert planned_size(0.05, 0.8) == math.ceil((2.801585 / 0.05) ** 2 * 0.16)  # p(1-p) = .16
    # A rare outcome (6% refusals): p(1-p) = .056 < .10, but a 10-point change flips >= 10% of items.
    assert planned_size(0.10, 0.06) == math.ceil((2.801585 / 0.1) ** 2 * 0.10)
    assert mde(planned_size(0.10, 0.06), 0.10) <= 0.10
    assert planned_size(0.6, 0.5) == 14  # (2.8 / .6)^2 * .6 = 13.1; the exact test's floor is 10
    with pytest.raises(ValueError):
        planned_size(3.0)


# --- a planted regression --------------------------------------------------------------------------


def _u(*parts) -> float:
    """A deterministic uniform number in [0, 1) from the parts."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _planted_items(task: str, categories: dict[str, int]) -> list[MCItem]:
    return [
        MCItem(
            id=f"{task}/{cat}/{i}",
            question=f"{task} {cat} question {i}",
            choices=["w", "x", "y", "z"],
            answer_index=int(_u("answer", task, cat, i) * 4),
            category=cat,
            source=task,
        )  # fmt: skip
        for cat, n in categories.items()
        for i in range(n)
    ]


PLANTED = {
    "plant_a": {"c1": 40, "c2": 40, "c3": 40, "c4": 40},
    "plant_b": {"b1": 60, "b2": 60},
}


def _planted_task(name: str, metric: MetricSpec = ACC) -> Task:
    items = _planted_items(name, PLANTED[name])
    return Task(
        name=name,
        description=f"planted {name}",
        sources=(name,),
        metric=metric,
        kind="score",
        load=lambda: items,
        run=partial(run_multiple_choice, task=name, request_of=formats.arc_request, headline="acc"),
        aggregate=aggregate_multiple_choice,
        default_limit=1000,
    )


class PlantedModel:
    """Right on about 70% of items; ``noise`` of the items change answer both ways; ``damage`` of the
    right answers in category ``damaged`` turn wrong."""

    def __init__(self, answers: dict[str, int], *, noise: float = 0.0, damaged: str | None = None,
                 damage: float = 0.0, salt: str = ""):  # fmt: skip
        self.answers, self.noise, self.damaged, self.damage, self.salt = answers, noise, damaged, damage, salt

    def right(self, item_id: str) -> bool:
        right = _u("skill", item_id) < 0.7
        if _u("noise", self.salt, item_id) < self.noise:
            right = not right
        if self.damaged and f"/{self.damaged}/" in item_id and right and _u("damage", item_id) < self.damage:
            right = False
        return right

    def __call__(self, request) -> list[float]:
        gold = self.answers[request.id]
        pick = gold if self.right(request.id) else (gold + 1) % len(request.continuations)
        return [0.0 if i == pick else -5.0 for i in range(len(request.continuations))]


def _planted_audit(tmp_path, monkeypatch, checkpoint: PlantedModel, metric: MetricSpec = ACC):
    tasks = {name: _planted_task(name, metric) for name in PLANTED}
    for name, task in tasks.items():
        monkeypatch.setitem(registry._builtin(), name, task)
    answers = {it.id: it.answer_index for t in tasks.values() for it in t.load()}
    engines = {
        "base": ScriptedEngine(score=PlantedModel(answers), name="base"),
        "ckpt": ScriptedEngine(score=checkpoint, name="ckpt"),
    }
    return run_audit(["base", "ckpt"], list(PLANTED), tmp_path, load_engine=lambda spec, c, t: engines[spec],
                     cache=False, progress=False)  # fmt: skip


def _flags(report):
    rows = report.deltas + report.prompt_type_deltas
    return {(r.task, r.category) for r in rows if r.significant}


def test_planted_regression_is_flagged_where_it_was_planted_and_nowhere_else(tmp_path, monkeypatch):
    """Half the right answers of plant_a/c2 turn wrong (about 14 of 40), over 5% two-way noise
    everywhere: c2 is flagged, and plant_a as a whole; no other category or task is."""
    answers = {it.id: it.answer_index for name in PLANTED for it in _planted_task(name).load()}
    damaged = PlantedModel(answers, noise=0.05, damaged="c2", damage=0.5, salt="ckpt")
    report = _planted_audit(tmp_path, monkeypatch, damaged)
    assert _flags(report) == {("plant_a", "c2"), ("plant_a", None)}
    c2 = next(r for r in report.deltas if r.category == "c2")
    assert c2.regressed and c2.delta < -0.2 and c2.q_value <= 0.05
    families = {(f.family, f.model): f for f in report.power.families}
    assert families[("categories of plant_a", "ckpt")].m == 4
    assert families[("tasks", "ckpt")].m == 2
    # The failure analysis ranks c2 first among plant_a's categories.
    from tether.audit.report import failure_analysis

    (failure,) = [f for f in failure_analysis(report) if f["task"] == "plant_a"]
    assert failure["categories"][0]["category"] == "c2"
    assert failure["flips"][0]["category"] == "c2"


def test_undamaged_copy_flags_nothing(tmp_path, monkeypatch):
    answers = {it.id: it.answer_index for name in PLANTED for it in _planted_task(name).load()}
    noisy = PlantedModel(answers, noise=0.05, salt="ckpt")  # the same model, 5% two-way churn
    report = _planted_audit(tmp_path, monkeypatch, noisy)
    assert _flags(report) == set()
    assert not any(p.significant for a in report.power.axes for p in a.points)
    assert sum(g.n_regressed + g.n_improved for g in report.flips) > 0  # it did change answers


def test_small_categories_are_shown_but_never_flagged(tmp_path, monkeypatch):
    """Every right answer of a 5-item category turns wrong: p >= 2 * .5**5 > .05 whatever happens."""
    monkeypatch.setitem(PLANTED, "plant_a", {**PLANTED["plant_a"], "tiny": 5})
    answers = {it.id: it.answer_index for name in PLANTED for it in _planted_task(name).load()}
    report = _planted_audit(tmp_path, monkeypatch, PlantedModel(answers, damaged="tiny", damage=1.0))
    tiny = next(r for r in report.deltas if r.category == "tiny")
    assert tiny.delta < 0 and not tiny.testable and not tiny.significant and tiny.mde is None
    families = {(f.family, f.model): f for f in report.power.families}
    assert families[("categories of plant_a", "ckpt")].untestable == 1
    assert families[("categories of plant_a", "ckpt")].m == 4


def test_planted_task_without_signal_makes_no_claims(tmp_path, monkeypatch):
    """The same damage on a task whose chance level is the baseline's accuracy: shown, not flagged."""
    at_seventy = ACC.model_copy(update={"chance": 0.7})
    answers = {it.id: it.answer_index for name in PLANTED for it in _planted_task(name).load()}
    damaged = PlantedModel(answers, damaged="c2", damage=0.5)
    report = _planted_audit(tmp_path, monkeypatch, damaged, metric=at_seventy)
    assert report.power.task("plant_a").signal is False
    assert _flags(report) == set()
    c2 = next(r for r in report.deltas if r.category == "c2")
    assert c2.p_value < 0.001 and c2.signal is False and not c2.regressed
    assert report.power.axis("capability_axis").spec is None
