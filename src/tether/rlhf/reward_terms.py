"""PPO's reward beyond the reward model: rule terms from the labeler's proxies, and the monitors' signal.

A reward model trained on a few hundred AI-labelled pairs learns the easiest thing that separates
them. On the default corpus that is length: PPO against it alone wrote shorter summaries and *lost*
coverage (README, "RLHF for summarization"). Rule terms put what the model under-weights back into
the reward, as InstructGPT-style pipelines do with format or length rules::

    reward = reward_model(prompt, response)            # normalised to the RM's training mean/std
           + sum(weight[k] * proxy_k(document, response) for k in terms)   # each proxy in [0, 1]

The reward-hacking monitor needs a quality signal the policy is *not* optimising, or it can never see
reward rise while quality falls. ``monitor_quality: auto`` therefore watches the combined proxy score
when there are no rule terms, and otherwise the faithfulness/coverage proxies that are not rule terms
(e.g. the source-support proxy, faithfulness, when coverage is a term). Those proxies are still the
family the AI labels came from; ``qa`` (:class:`tether.rlhf.independent.ReaderQuality`) is a signal
outside it: a reader that takes no part in training answers the document's question from the summary.
It is only as good as its reader: ``tether rlhf check`` says whether the reader has any signal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from tether.config import StrictModel
from tether.engine.types import Prompt
from tether.rlhf.labeler import AILabeler, SummaryScores
from tether.train.ppo.types import BatchScores, Reward

log = logging.getLogger(__name__)

Proxy = Literal["faithfulness", "coverage", "conciseness", "repetition", "score"]


class PPORewardConfig(StrictModel):
    """Rule terms added to the reward model's score during PPO, and what the hacking monitor watches."""

    terms: dict[Proxy, float] = Field(
        default_factory=dict,
        description="Proxy name -> weight: reward += weight * proxy (each in [0, 1]; the RM score has std 1). "
        "Empty: the reward model alone.",
    )
    monitor_quality: Literal["auto", "score", "faithfulness", "coverage", "qa"] = Field(
        "auto",
        description="The monitors' independent quality signal. auto: the combined score without rule terms, "
        "else the mean of faithfulness/coverage not used as terms (the score if both are); qa: P(correct "
        "answer) by checks.reader reading the summary (BoolQ documents only).",
    )
    validation_quality: list[Proxy | Literal["qa"]] = Field(
        default_factory=lambda: ["faithfulness", "coverage"],
        min_length=1,
        description="Proxies averaged into the validation quality of ppo.eval_every (greedy summaries of "
        "held-out documents): the checkpoint kept by ppo.keep_best, and the monitors' held-out signal. "
        "[qa] alone: the QA reader instead.",
    )

    @field_validator("validation_quality")
    @classmethod
    def _qa_alone(cls, value: list[str]) -> list[str]:
        if "qa" in value and len(value) > 1:
            raise ValueError("qa is a probability, not a proxy: use [qa] alone or proxies only")
        return value


def monitor_signal(config: PPORewardConfig) -> list[str]:
    """The proxies the monitors average into their quality signal."""
    if config.monitor_quality != "auto":
        return [config.monitor_quality]
    if not config.terms:
        return ["score"]
    free = [p for p in ("faithfulness", "coverage") if p not in config.terms and "score" not in config.terms]
    if not free:
        log.warning(
            "every quality proxy is a PPO rule term (%s): the hacking monitor watches the combined score, "
            "which the policy is optimising, so it can only catch the reward model's part",
            ", ".join(config.terms),
        )
        return ["score"]
    return free


def _proxy_scores(labeler: AILabeler, prompts: Sequence[Prompt], texts: Sequence[str]) -> list[SummaryScores]:
    extra = [p.model_extra or {} for p in prompts]
    missing = [p.id for p, e in zip(prompts, extra, strict=True) if "document" not in e]
    if missing:
        raise ValueError(
            f"PPO prompts {missing[:3]} carry no 'document': the proxies need the source "
            "(build prompts with tether.rlhf.pipeline.ppo_prompts)"
        )
    return [labeler.score(e["document"], t, e.get("question")) for e, t in zip(extra, texts, strict=True)]


class ProxyQuality:
    """The mean of the ``signal`` proxies per response; with more than one proxy, each proxy's batch
    mean is a part (:class:`~tether.train.ppo.types.BatchScores`).

    The parts let PPO's validation see a trade the mean hides: faithfulness up, coverage down.
    """

    def __init__(self, labeler: AILabeler, signal: Sequence[str] = ("score",)):
        self.labeler = labeler
        self.signal = list(signal)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> BatchScores:
        rows = [[s.value(p) for p in self.signal] for s in _proxy_scores(self.labeler, prompts, responses)]
        parts = (
            {p: sum(row[i] for row in rows) / len(rows) for i, p in enumerate(self.signal)}
            if len(self.signal) > 1 and rows
            else {}
        )
        return BatchScores([sum(row) / len(row) for row in rows], parts)


def quality_fn(labeler: AILabeler, signal: Sequence[str] = ("score",)) -> ProxyQuality:
    """Mean of the ``signal`` proxies on PPO samples: the monitors' independent quality signal."""
    return ProxyQuality(labeler, signal)


class RuleTermReward:
    """A :class:`~tether.train.ppo.types.Reward`: the reward model's score plus weighted proxy terms.
    With terms, the parts of its scores are the batch means of ``reward_model`` and of each proxy."""

    def __init__(self, reward_model: Reward, labeler: AILabeler, terms: dict[str, float]):
        self.reward_model = reward_model
        self.labeler = labeler
        self.terms = dict(terms)

    def check_tokenizer(self, tokenizer: Any) -> None:
        self.reward_model.check_tokenizer(tokenizer)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> BatchScores:
        base = self.reward_model.score(prompts, responses)
        if not self.terms:
            return base
        scores = _proxy_scores(self.labeler, prompts, responses)
        n = len(base.scores)
        parts = {"reward_model": sum(base.scores) / n}
        total = list(base.scores)
        for proxy, weight in self.terms.items():
            values = [s.value(proxy) for s in scores]
            total = [t + weight * v for t, v in zip(total, values, strict=True)]
            parts[proxy] = sum(values) / n
        return BatchScores(total, parts)
