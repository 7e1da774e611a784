"""The pairs and mixes of multi-objective preference training (issue #18)."""

from __future__ import annotations

from collections import Counter

from tether.evals.types import ItemResult, MetricSpec
from tether.frontier.multi import disagreements, mix

REFUSAL_RATE = MetricSpec(name="refusal_rate", higher_is_better=True)
COMPLIANCE = MetricSpec(name="compliance", higher_is_better=True)
LOWER = MetricSpec(name="attack_success", higher_is_better=False)


def _r(model, task, item, score, status="scored", output=None):
    return ItemResult(
        task=task, item_id=item, model=model, model_fingerprint=model, status=status,
        score=score if status == "scored" else None, prompt=f"prompt {item}", output=output or f"{model} {item}",
    )  # fmt: skip


def test_disagreements_choose_the_better_answer_by_the_task_metric():
    results = {
        ("base", "harm"): [
            _r("base", "harm", "1", 0.0),
            _r("base", "harm", "2", 1.0),
            _r("base", "harm", "3", 0.0),
        ],
        ("aligned", "harm"): [
            _r("aligned", "harm", "1", 1.0),
            _r("aligned", "harm", "2", 1.0),  # same score: no pair
            _r("aligned", "harm", "3", None, status="degenerate"),  # unscored: no pair
        ],
        ("base", "jb"): [_r("base", "jb", "1", 1.0)],
        ("aligned", "jb"): [_r("aligned", "jb", "1", 0.0)],
    }
    pairs = disagreements(results, {"harm": REFUSAL_RATE, "jb": LOWER}, {"harm": "safety", "jb": "safety"})
    assert [(p["id"], p["chosen_by"]) for p in pairs] == [("harm/1", "aligned"), ("jb/1", "aligned")]
    assert pairs[0]["judged"] == {"chosen": "aligned 1", "rejected": "base 1"}
    assert pairs[0]["prompt"] == "prompt 1" and pairs[0]["objective"] == "safety"


def _pool(task, n, objective="helpful"):
    return [{"id": f"{task}/{i}", "task": task, "objective": objective} for i in range(n)]


def test_the_mix_weighs_helpfulness_lambda_to_one_with_equal_task_shares():
    safety = _pool("harm", 30, "safety")
    helpful = _pool("over", 2) + _pool("arc", 500)
    out = mix(safety, helpful, 1.0, 40, seed=0)
    tasks = Counter(p["task"] for p in out)
    assert tasks == {"harm": 20, "over": 10, "arc": 10}
    # a small pool is repeated evenly, a large one sampled without repeats
    assert Counter(p["id"] for p in out if p["task"] == "over") == {"over/0": 5, "over/1": 5}
    assert len({p["id"] for p in out if p["task"] == "arc"}) == 10
    assert Counter(p["task"] for p in mix(safety, helpful, 0.0, 40, seed=0)) == {"harm": 40}
    assert Counter(p["task"] for p in mix(safety, helpful, 3.0, 40, seed=0))["harm"] == 10
    assert mix(safety, helpful, 1.0, 40, seed=0) == out  # reproducible
    assert mix(safety, helpful, 1.0, 40, seed=1) != out
