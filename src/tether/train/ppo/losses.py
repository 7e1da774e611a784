"""PPO for language models as small pure functions over ``(B, R)`` response tensors.

Every function takes a ``mask`` (1 on real response tokens, 0 on right padding) and ignores the
padded positions, so callers never need to trim ragged batches. The trainer calls these; none of
them touches a model or an optimizer.
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3", "abs"]


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over positions where ``mask`` is 1."""
    x = x * mask
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (0 where the mask is all zero)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked positions (Bessel-corrected by default)."""
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit variance over the masked positions, and to mean 0 when ``shift_mean``.

    Padded positions come back as 0 so they cannot leak into later sums. With ``shift_mean=False``
    the mean is restored after scaling (used for rewards, where the sign of the mean matters).
    """
    mask = mask.to(x.dtype)
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    white = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        white = white + mean
    return white * mask


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    With ``d = logp - ref_logp`` (tokens sampled from the policy):
      - ``k1``: ``d``. Unbiased, can be negative per token (Ziegler et al. 2019, the classic RLHF penalty).
      - ``k2``: ``d**2 / 2``. Biased but low variance, never negative.
      - ``k3``: ``exp(-d) - 1 + d``. Unbiased and never negative (Schulman's "approximating KL").
      - ``abs``: ``|d|``. Never negative; a common penalty that does not reward moving below the reference.
    """
    d = logprobs - ref_logprobs
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d**2
    if estimator == "k3":
        return torch.expm1(-d) + d
    if estimator == "abs":
        return d.abs()
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of k1, k2, k3, abs")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of ``mask`` (0 for an all-zero row). Shape ``(B,)``."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * (positions + 1)).argmax(dim=1)


def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: KLEstimator = "k1",
) -> torch.Tensor:
    """Per-token rewards: ``-kl_coef * KL_t`` on every real token plus the sequence score on the last one.

    The reward model scores whole sequences, so its score lands where the episode ends; the KL
    penalty is dense so every token pays for drifting from the reference. Shape ``(B, R)``; padded
    positions are 0, and a row with no real token gets no score.
    """
    mask = mask.to(logprobs.dtype)
    rewards = -kl_coef * kl_per_token(logprobs, ref_logprobs, estimator) * mask
    last = last_token_index(mask)
    has_tokens = mask.sum(dim=1) > 0
    bonus = torch.where(has_tokens, scores.to(rewards.dtype), torch.zeros_like(rewards[:, 0]))
    return rewards.scatter_add(1, last.unsqueeze(1), bonus.unsqueeze(1))


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over right-padded responses.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``. The
    episode ends at the last real token: the bootstrap value after it is 0 and nothing past it
    (rewards or values in the padding) reaches the real positions. Returns ``(advantages, returns)``
    with ``returns = advantages + values``, both ``(B, R)`` and 0 on padding.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    # Append one padded step so the last real token always sees "episode over" after it.
    alive = torch.cat([mask, torch.zeros_like(mask[:, :1])], dim=1)
    values_next = torch.cat([values, torch.zeros_like(values[:, :1])], dim=1)
    carried = torch.zeros_like(values[:, 0])
    backwards = []
    for t in reversed(range(rewards.shape[1])):
        # A padded next position means the episode ended at t: no bootstrap, no carried advantage.
        delta = rewards[:, t] + gamma * values_next[:, t + 1] * alive[:, t + 1] - values[:, t]
        carried = delta + gamma * lam * alive[:, t + 1] * carried
        backwards.append(carried)
    advantages = torch.stack(backwards[::-1], dim=1) * mask
    return advantages, (advantages + values) * mask


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss, token-level mean: ``mean(max(-A * r, -A * clip(r, 1-eps, 1+eps)))``.

    Taking the max of the two losses (the pessimistic objective) removes the gradient exactly when
    the ratio has already moved past the trust region in the direction the advantage wants.
    Returns ``(loss, clipfrac, approx_kl)``: the fraction of tokens where the clipped term was the
    larger (so had no gradient), and the k3 estimate of KL(old || new). The last two are detached.
    """
    mask = mask.to(logprobs.dtype)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(mask.dtype), mask)
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, clipfrac, approx_kl


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: ``0.5 * mean(max((V - G)^2, (V_clip - G)^2))`` with
    ``V_clip = V_old + clip(V - V_old, -eps, eps)``.

    Like the policy loss, the max keeps the pessimistic term so the value head cannot jump far from
    the rollout's estimates in one update. Returns ``(loss, clipfrac)``; clipfrac is detached.
    """
    mask = mask.to(values.dtype)
    values_clipped = old_values + torch.clamp(values - old_values, -clip_eps_value, clip_eps_value)
    unclipped = (values - returns) ** 2
    clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(mask.dtype), mask)
    return loss, clipfrac


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the next-token distributions at the masked positions.

    ``logits`` is ``(B, R, V)``; ``H = logsumexp(z) - sum(softmax(z) * z)`` avoids materialising
    a second ``(B, R, V)`` log-softmax tensor.
    """
    logits = logits.float()
    per_token = torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return masked_mean(per_token, mask)
