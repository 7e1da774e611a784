"""RL from AI feedback, labeling half (Bai et al. 2022, §4): two sampled answers per prompt; a feedback
model, shown a principle's comparison question, picks one by the log-probabilities of "(A)" and "(B)".

Position bias: small models prefer whichever option is labelled (A). Each pair is scored in both
orders and the probabilities that answer ``a`` is better are averaged:

    p1 = softmax(lp_A, lp_B)[0]   with a shown as (A), b as (B)
    p2 = softmax(lp_A, lp_B)[1]   with b shown as (A), a as (B)
    p(a better) = (p1 + p2) / 2

An additive bias toward "(A)" raises p1 and lowers p2 by mirror amounts (in logit space), so the
average follows the content: with content logit gap d and bias β, p1 = σ(d + β), p2 = σ(d − β), and
σ(d + β) + σ(d − β) > 1 exactly when d > 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from tether.cai.constitution import Constitution
from tether.cai.loop import resolve_style
from tether.cai.prompts import CAIPrompt
from tether.cai.records import LabeledPair
from tether.config import StrictModel
from tether.engine.protocol import EngineLike
from tether.engine.types import Prompt, SamplingParams, ScoreRequest

if TYPE_CHECKING:
    from tether.judges import RefusalJudge

FEEDBACK_TEMPLATE = (
    "Consider the following conversation between a user and an AI assistant.\n\nUser: {prompt}\n\n"
    "{question}\n(A) {first}\n(B) {second}\n\nAnswer with (A) or (B)."
)
CHOICES = ["(A)", "(B)"]
# For a base feedback model (no chat template): the CAI paper's multiple-choice transcript, which
# such a model continues with " (A)" or " (B)".
COMPLETION_SUFFIX = "\nThe answer is:"
COMPLETION_CHOICES = [" (A)", " (B)"]


class RLAIFConfig(StrictModel):
    """Sampling and labeling of AI-feedback pairs."""

    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(max_new_tokens=128, temperature=0.9, top_p=0.95, n=2),
        description="Sampling of the two answers per prompt (n is forced to 2).",
    )
    min_confidence: float = Field(
        0.5, ge=0.5, le=1.0, description="Drop pairs whose p_chosen is below this (0.5 keeps every non-tie)."
    )


def two_way_softmax(first: float, second: float) -> float:
    """P(first) from two log-probabilities."""
    top = max(first, second)
    a, b = math.exp(first - top), math.exp(second - top)
    return a / (a + b)


def debiased_preference(
    first_order: Sequence[float], second_order: Sequence[float]
) -> tuple[float, float, float]:
    """P(a better) from [lp(A), lp(B)] with a shown first, and [lp(A), lp(B)] with a shown second.

    Returns (p1, p2, mean): a's probability in each order and their average."""
    p1 = two_way_softmax(first_order[0], first_order[1])
    p2 = two_way_softmax(second_order[1], second_order[0])
    return p1, p2, (p1 + p2) / 2


def sample_answer_pairs(
    prompts: Sequence[CAIPrompt], engine: EngineLike, sampling: SamplingParams, *, stage: str = "cai/rlaif"
) -> dict[str, tuple[str, str]]:
    """Two sampled answers per prompt, in one batched call."""
    params = sampling.model_copy(update={"n": 2})
    completions = engine.generate(
        [Prompt(id=p.id, text=p.text) for p in prompts], params, stage=f"{stage}/sample"
    )
    out: dict[str, list[str]] = {}
    for c in completions:
        out.setdefault(c.prompt_id, []).append(c.text.strip())
    return {pid: (texts[0], texts[1]) for pid, texts in out.items()}


@dataclass
class LabelStats:
    prompts: int = 0
    identical: int = 0  # both samples the same text: no preference to learn
    low_confidence: int = 0
    pairs: int = 0
    mean_p_chosen: float | None = None
    position_a_rate_raw: float | None = None  # how often (A) won in the first order alone: the bias
    harmful_disagreements_judged: int = 0  # harmful prompts with exactly one refusal among the two
    harmful_agreement: float | None = None  # share of those where the labeler chose the refusal
    benign_disagreements_judged: int = 0
    benign_agreement: float | None = None  # share where the labeler chose the non-refusal

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def label_pairs(
    prompts: Sequence[CAIPrompt],
    answers: dict[str, tuple[str, str]],
    feedback: EngineLike,
    constitution: Constitution,
    *,
    judge: RefusalJudge | None = None,
    seed: int = 0,
    min_confidence: float = 0.5,
    stage: str = "cai/rlaif",
) -> tuple[list[LabeledPair], LabelStats]:
    """Label every prompt's two answers with the feedback model (both orders, one batched score call)."""
    stats = LabelStats(prompts=len(prompts))
    live = [p for p in prompts if p.id in answers and answers[p.id][0] != answers[p.id][1]]
    stats.identical = sum(1 for p in prompts if p.id in answers) - len(live)
    principles = {p.id: constitution.sample(p.kind, f"{p.id}/rlaif", seed) for p in live}
    completion = resolve_style("auto", feedback) == "completion"
    requests = []
    for p in live:
        a, b = answers[p.id]
        question = principles[p.id].comparison_question.strip()
        for order, (first, second) in enumerate(((a, b), (b, a))):
            text = FEEDBACK_TEMPLATE.format(prompt=p.text, question=question, first=first, second=second)
            if completion:
                text += COMPLETION_SUFFIX
            context = feedback.render(Prompt(id=f"{p.id}#o{order}", text=text, chat=not completion))
            requests.append(
                ScoreRequest(
                    id=f"{p.id}#o{order}",
                    context=context,
                    continuations=COMPLETION_CHOICES if completion else CHOICES,
                )
            )
    results = feedback.score(requests, stage=f"{stage}/label") if requests else []

    pairs: list[LabeledPair] = []
    raw_a_wins = 0
    for i, p in enumerate(live):
        first, second = results[2 * i].logprobs, results[2 * i + 1].logprobs
        raw_a_wins += first[0] > first[1]
        p1, p2, p_a = debiased_preference(first, second)
        a, b = answers[p.id]
        chosen, rejected, p_chosen = (a, b, p_a) if p_a >= 0.5 else (b, a, 1 - p_a)
        if p_chosen < min_confidence:
            stats.low_confidence += 1
            continue
        pairs.append(
            LabeledPair(
                prompt_id=p.id,
                prompt_kind=p.kind,
                prompt=p.text,
                chosen=chosen,
                rejected=rejected,
                principle=principles[p.id].name,
                p_chosen=round(p_chosen, 6),
                p_first_order=round(p1, 6),
                p_second_order=round(p2, 6),
            )
        )
    stats.pairs = len(pairs)
    if live:
        stats.position_a_rate_raw = round(raw_a_wins / len(live), 4)
    if pairs:
        stats.mean_p_chosen = round(sum(x.p_chosen for x in pairs) / len(pairs), 4)
    if judge is not None and pairs:
        pairs = _judge_agreement(pairs, judge, stats)
    return pairs, stats


def _judge_agreement(pairs: list[LabeledPair], judge: RefusalJudge, stats: LabelStats) -> list[LabeledPair]:
    """Attach refusal labels, and measure how often the labeler agrees with the refusal judge where
    exactly one answer refuses (harmful: the refusal should win; benign: the answer should win)."""
    from tether.evals.tasks._common import judge_traced

    flat = [(pair.prompt, text) for pair in pairs for text in (pair.chosen, pair.rejected)]
    ids = [f"{pair.prompt_id}/{side}" for pair in pairs for side in ("chosen", "rejected")]
    verdicts = judge_traced(judge, flat, ids)
    out, agree = [], {"harmful": [0, 0], "benign": [0, 0]}
    for i, pair in enumerate(pairs):
        chosen, rejected = verdicts[2 * i].label, verdicts[2 * i + 1].label
        out.append(pair.model_copy(update={"chosen_refusal": chosen, "rejected_refusal": rejected}))
        if {chosen, rejected} == {"refusal", "compliance"}:
            tally = agree[pair.prompt_kind]
            tally[1] += 1
            tally[0] += (chosen == "refusal") == (pair.prompt_kind == "harmful")
    for kind in ("harmful", "benign"):
        hits, total = agree[kind]
        setattr(stats, f"{kind}_disagreements_judged", total)
        setattr(stats, f"{kind}_agreement", round(hits / total, 4) if total else None)
    return out
