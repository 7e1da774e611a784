"""Typed records that flow through a PPO step, and the reward that produces their scores.

Shapes use ``B`` for batch (sequences), ``Q`` for the padded query width and ``R`` for the padded
response width. Queries are left-padded and responses right-padded, so ``cat(query_ids, response_ids)``
is one row per sequence with the response starting at column ``Q`` for every row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

from tether.engine.types import Prompt


class Rollout(NamedTuple):
    """One batch of sampled responses with everything PPO needs, all computed without gradients.

    Attributes:
        query_ids (torch.Tensor): prompt token ids, left-padded. Shape ``(B, Q)``.
        query_mask (torch.Tensor): 1 on real prompt tokens, 0 on left padding. Shape ``(B, Q)``.
        response_ids (torch.Tensor): sampled token ids, right-padded after the last real token
            (EOS included when it was sampled). Shape ``(B, R)``.
        response_mask (torch.Tensor): 1 on real response tokens, 0 on right padding. Shape ``(B, R)``.
        old_logprobs (torch.Tensor): log-probs of ``response_ids`` under the policy that sampled
            them (the behaviour policy). Shape ``(B, R)``.
        ref_logprobs (torch.Tensor): log-probs of ``response_ids`` under the frozen reference model.
            Shape ``(B, R)``.
        values (torch.Tensor): value-head estimates at each response position, i.e. the value of the
            state *before* the token at that position was generated. Shape ``(B, R)``.
        scores (torch.Tensor): one scalar reward per sequence (reward model and/or judges).
            Shape ``(B,)``.
    """

    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor

    @property
    def input_ids(self) -> torch.Tensor:
        """Query and response side by side. Shape ``(B, Q + R)``."""
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """Mask for :attr:`input_ids`. Shape ``(B, Q + R)``."""
        return torch.cat([self.query_mask, self.response_mask], dim=1).long()

    @property
    def response_start(self) -> int:
        """Column of ``input_ids`` where every response begins (``Q``)."""
        return self.query_ids.shape[1]

    def select(self, index: torch.Tensor) -> Rollout:
        """The rows in ``index`` (a minibatch), every field sliced alike."""
        return Rollout(*(field[index] for field in self))


class PPOStats(NamedTuple):
    """What one PPO update did, as plain floats (means over minibatches unless stated).

    Attributes:
        policy_loss: clipped surrogate loss.
        value_loss: clipped value loss (already halved, before ``vf_coef``).
        entropy: mean per-token entropy of the policy on the response tokens.
        approx_kl: KL(old policy || new policy) per token, estimated with k3 from the ratios.
        clipfrac: fraction of response tokens whose policy loss was clipped (no gradient).
        value_clipfrac: fraction of response tokens whose value loss used the clipped value.
        kl_to_ref: mean over sequences of the summed per-token KL (k1) between the behaviour
            policy and the reference: the quantity an adaptive KL controller targets.
        kl_coef: KL penalty coefficient used for this batch's rewards.
        score_mean: mean sequence score from the reward model/judges.
        reward_mean: mean over sequences of the summed per-token rewards (score minus KL penalty).
        return_mean: mean GAE return over response tokens.
        adv_mean: mean GAE advantage over response tokens, before whitening.
        value_mean: mean old value estimate over response tokens.
        response_length: mean number of real response tokens.
        grad_norm: mean gradient norm before clipping.
        n_updates: optimizer steps taken (fewer than planned when ``target_approx_kl`` stopped early).
    """

    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clipfrac: float
    value_clipfrac: float
    kl_to_ref: float
    kl_coef: float
    score_mean: float
    reward_mean: float
    return_mean: float
    adv_mean: float
    value_mean: float
    response_length: float
    grad_norm: float
    n_updates: int


# --- rewards and quality signals ----------------------------------------------------------------


@dataclass(frozen=True)
class BatchScores:
    """Scores of one batch of responses.

    Attributes:
        scores: one float per response, in the batch's order.
        parts: batch mean of each named part the scores are built from (empty when a score is
            one piece). PPO logs a reward's parts as ``reward_terms`` (reward model vs rule terms)
            and a validation quality's as ``eval_parts`` (faithfulness vs coverage), so that a
            trade the total hides still shows.
    """

    scores: list[float]
    parts: dict[str, float] = field(default_factory=dict)


class ResponseScorer(Protocol):
    """Scores responses to their prompts, a batch at a time: PPO's reward and its quality signals."""

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> BatchScores: ...


@runtime_checkable
class Reward(ResponseScorer, Protocol):
    """PPO's reward. ``check_tokenizer`` runs once with the policy's tokenizer before the first
    rollout: a reward model must share it; a reward without a model has nothing to check."""

    def check_tokenizer(self, tokenizer: Any) -> None: ...


@dataclass(frozen=True)
class FunctionReward:
    """A :class:`Reward` from a plain function ``fn(prompts, responses)`` returning one float per
    response (no parts); ``tokenizer_check``, when given, is what :meth:`check_tokenizer` runs."""

    fn: Callable[[Sequence[Prompt], Sequence[str]], Sequence[float]]
    tokenizer_check: Callable[[Any], None] | None = None

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> BatchScores:
        return BatchScores([float(s) for s in self.fn(prompts, responses)])

    def check_tokenizer(self, tokenizer: Any) -> None:
        if self.tokenizer_check is not None:
            self.tokenizer_check(tokenizer)
