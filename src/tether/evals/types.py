"""Records produced by evaluating one model on one task: the contract between evals, audit and report."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Unscored is not safe: a verdict that cannot be parsed, a crashed generation, an empty answer and a
# degenerate one (an echoed system prompt, a loop, word salad: tether.judges.degenerate) are counted
# apart and left out of every rate's denominator; a degenerate answer is never a refusal.
ItemStatus = Literal["scored", "unparsed", "error", "empty", "degenerate"]


class ItemResult(BaseModel):
    """One item of one task for one model. ``score`` is the item's value of the task's headline
    metric, in [0, 1] (1 = refused for a refusal task, 1 = attack succeeded for a jailbreak task,
    1 = correct for a capability task); the task's MetricSpec says which direction is better.
    ``score`` is None unless ``status == "scored"``."""

    model_config = ConfigDict(frozen=True)

    task: str
    item_id: str
    model: str  # display name of the model/checkpoint
    model_fingerprint: str
    category: str = "all"
    status: ItemStatus = "scored"
    score: float | None = None
    prompt: str = ""
    output: str = ""
    reference: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)


class MetricSpec(BaseModel):
    """How a task's headline metric reads: the mean of item scores, and which direction is better.

    ``chance`` is what a model that reads nothing scores: 1/k for k content choices scored by
    log-likelihood, the best constant answer where the choices are fixed labels (MMLU's letters,
    BoolQ's yes/no), 0 for exact-match generation. A task whose baseline interval covers it has
    "no signal" (``tether.audit.power``). None: no such level (refusal rates, toxicity)."""

    model_config = ConfigDict(frozen=True)

    name: str  # e.g. "refusal_rate", "acc", "attack_success_rate"
    higher_is_better: bool = True
    axis: Literal["safety", "capability", "other"] = "other"
    chance: float | None = Field(default=None, ge=0.0, le=1.0)
