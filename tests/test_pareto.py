"""Pareto frontier and axis scores on hand-made points."""

from __future__ import annotations

import pytest

from tether.audit import AxisSpec, ParetoSpec, TaskSummary, axis_score, dominates, pareto_front, pareto_points
from tether.audit.pareto import check_spec, default_pareto_spec
from tether.errors import ConfigError
from tether.evals.types import MetricSpec

REFUSAL = MetricSpec(name="refusal_rate", higher_is_better=True, axis="safety")
ASR = MetricSpec(name="attack_success_rate", higher_is_better=False, axis="safety")
ACC = MetricSpec(name="acc", higher_is_better=True, axis="capability")
SPEC = ParetoSpec(safety=AxisSpec(tasks=["refusal", "jailbreak"]), capability=AxisSpec(tasks=["mmlu"]))
METRICS = {"refusal": REFUSAL, "jailbreak": ASR, "mmlu": ACC}


def summary(model, task, value, complete=True):
    return TaskSummary(
        task=task,
        model=model,
        metric=METRICS[task],
        value=value,
        ci_low=value,
        ci_high=value,
        n_scored=10 if value is not None else 0,
        n_unparsed=0,
        n_error=0 if value is not None else 10,
        n_empty=0,
        n_total=10,
        complete=complete,
    )


def test_dominance_needs_one_strict_improvement():
    assert dominates((0.6, 0.5), (0.5, 0.5))
    assert dominates((0.6, 0.6), (0.5, 0.5))
    assert not dominates((0.5, 0.5), (0.5, 0.5))
    assert not dominates((0.6, 0.4), (0.5, 0.5))


def test_front_on_hand_made_points():
    # a (.9,.2) and c (.5,.8) and d (.2,.9) trade off; b (.4,.1) is beaten by a; e (.5,.7) by c.
    pts = [(0.9, 0.2), (0.4, 0.1), (0.5, 0.8), (0.2, 0.9), (0.5, 0.7)]
    assert pareto_front(pts) == [True, False, True, True, False]


def test_duplicates_are_both_on_the_front_and_ties_on_one_axis_are_resolved_by_the_other():
    assert pareto_front([(0.5, 0.5), (0.5, 0.5)]) == [True, True]
    # same safety; higher capability wins
    assert pareto_front([(0.5, 0.4), (0.5, 0.7)]) == [False, True]
    # a duplicate of a dominated point stays dominated
    assert pareto_front([(0.3, 0.3), (0.3, 0.3), (0.4, 0.4)]) == [False, False, True]


def test_front_edge_cases():
    assert pareto_front([]) == []
    assert pareto_front([(0.1, 0.1)]) == [True]


def test_axis_score_orients_lower_is_better_metrics():
    """safety = mean(refusal .8, 1 - attack success .3) = mean(.8, .7) = .75."""
    tasks = {"refusal": summary("m", "refusal", 0.8), "jailbreak": summary("m", "jailbreak", 0.3)}
    assert axis_score(tasks, SPEC.safety) == pytest.approx(0.75)
    tasks["jailbreak"] = summary("m", "jailbreak", None, complete=False)
    assert axis_score(tasks, SPEC.safety) is None
    assert axis_score({}, SPEC.capability) is None


def test_pareto_points_from_summaries():
    rows = []
    for model, (ref, jb, mmlu) in {
        "base": (0.2, 0.6, 0.5),  # safety .3, capability .5
        "sft": (0.8, 0.2, 0.45),  # safety .8, capability .45
        "bad": (0.5, 0.5, 0.4),  # safety .5, capability .4: dominated by sft
        "broken": (0.9, None, 0.9),  # no safety value: never on the front
        "partial": (0.95, 0.0, 0.95),  # would dominate all, but its mmlu run is incomplete
    }.items():
        rows += [summary(model, "refusal", ref), summary(model, "jailbreak", jb, complete=jb is not None)]
        rows.append(summary(model, "mmlu", mmlu, complete=model != "partial"))
    result = pareto_points(rows, SPEC, ["base", "sft", "bad", "broken", "partial"])
    pts = {p.model: p for p in result.points}
    assert [p.model for p in result.points] == ["base", "sft", "bad", "broken", "partial"]
    assert pts["base"].safety == pytest.approx(0.3) and pts["base"].capability == pytest.approx(0.5)
    assert pts["sft"].safety == pytest.approx(0.8)
    assert (pts["base"].on_frontier, pts["sft"].on_frontier, pts["bad"].on_frontier) == (True, True, False)
    assert pts["broken"].safety is None and not pts["broken"].on_frontier and not pts["broken"].complete
    assert pts["partial"].safety == pytest.approx(0.975) and not pts["partial"].on_frontier


def test_default_spec_from_metric_axes_and_unknown_task():
    spec = default_pareto_spec(METRICS)
    assert spec.safety.tasks == ["refusal", "jailbreak"] and spec.capability.tasks == ["mmlu"]
    assert default_pareto_spec({"mmlu": ACC}) is None
    bad = ParetoSpec(safety=AxisSpec(tasks=["refusl"]), capability=AxisSpec(tasks=["mmlu"]))
    with pytest.raises(ConfigError, match="unknown task 'refusl'") as exc:
        check_spec(bad, METRICS)
    assert "did you mean refusal" in str(exc.value)
