"""One PPO update over a batch of rollouts, top to bottom (after cleanrl's ``ppo.py``).

The trainer loop (generate -> score -> :func:`build_rollout` -> :func:`ppo_update` -> KL controller
update -> monitors) lives with the engine; this module owns the part that touches gradients:

1. rewards: the sequence score on the last token minus a per-token KL penalty to the reference;
2. advantages and returns by GAE, advantages whitened over the batch;
3. ``epochs`` passes of shuffled minibatches, each one clipped-surrogate + clipped-value loss
   (minus an optional entropy bonus), gradient-norm clipping, one optimizer step.

Every forward here is :func:`response_forward`: the rows that share a query (the samples of one
prompt) run it once and share its keys and values, the responses run on top, and the LM head, the
log-softmax and the value head see the response positions only. Minibatches keep a prompt's samples
together, and micro-batches bound memory: it is set by ``micro_batch_size``, not by the batch.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import defaultdict
from typing import NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tether.train.ppo.kl import AdaptiveKLController, FixedKLController, KLController
from tether.train.ppo.losses import (
    KLEstimator,
    entropy_from_logits,
    gae,
    kl_penalized_rewards,
    masked_mean,
    masked_sum,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)
from tether.train.ppo.types import PPOStats, Rollout
from tether.train.ppo.value_head import PolicyWithValueHead, position_ids_from_mask


class PPOConfig(BaseModel):
    """Hyperparameters of the PPO update. Defaults follow common RLHF practice for small models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(4, ge=1, description="Optimisation passes over each rollout batch.")
    minibatch_size: int = Field(
        8,
        ge=1,
        description="Sequences per optimizer step; one that does not divide the batch is rounded down "
        "to a divisor (with a warning).",
    )
    micro_batch_size: int | None = Field(
        8,
        ge=1,
        description="Sequences per forward/backward; gradients accumulate over a minibatch. "
        "None runs the whole minibatch at once. Sets the memory, not the result.",
    )
    clip_eps: float = Field(
        0.2, gt=0, description="Policy ratio clip range: ratios outside 1±clip_eps get no gradient."
    )
    clip_eps_value: float = Field(
        0.2,
        gt=0,
        description="Value clip range: new values may move at most this far from the rollout's values.",
    )
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss in the total loss.")
    ent_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus (0 disables it).")
    max_grad_norm: float = Field(
        1.0, gt=0, description="Clip the global gradient norm to this before each step."
    )
    gamma: float = Field(
        1.0, ge=0, le=1, description="Discount per token. 1 is usual: the episode is one response."
    )
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda: 1 = Monte Carlo returns, 0 = one-step TD.")
    whiten_advantages: bool = Field(True, description="Normalise advantages to mean 0, std 1 over the batch.")
    kl_estimator: KLEstimator = Field(
        "k1", description="Per-token KL penalty to the reference: k1, k2, k3 or abs."
    )
    init_kl_coef: float = Field(0.05, ge=0, description="KL penalty coefficient (initial one when adaptive).")
    target_kl: float | None = Field(
        6.0,
        gt=0,
        description="Adaptive KL target in nats per sequence (Ziegler et al. 2019); None keeps init_kl_coef fixed.",
    )
    kl_horizon: int = Field(
        10000, ge=1, description="Adaptive KL horizon in samples: larger reacts more slowly."
    )
    target_approx_kl: float | None = Field(
        None, gt=0, description="Stop the epochs early once an epoch's mean KL(old||new) exceeds this."
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="Sampling temperature of the rollouts; logits are divided by it so ratios match.",
    )


def make_kl_controller(config: PPOConfig) -> KLController:
    """Adaptive controller when ``config.target_kl`` is set, else a fixed coefficient."""
    if config.target_kl is None:
        return FixedKLController(config.init_kl_coef)
    return AdaptiveKLController(config.init_kl_coef, config.target_kl, config.kl_horizon)


def _token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    # gather - logsumexp gives the same numbers as log_softmax().gather() without a second (B, R, V) tensor.
    # Callers that scaled the logits already pass 1.0: dividing by it would cost another (B, R, V)
    # tensor and a pass over the vocabulary, and change no bit.
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _check_response_start(input_ids: torch.Tensor, response_start: int) -> int:
    if not 1 <= response_start < input_ids.shape[1]:
        raise ValueError(
            f"response_start={response_start} must leave at least one query token and one response "
            f"token in a sequence of length {input_ids.shape[1]}"
        )
    return input_ids.shape[1] - response_start


def logprobs_of(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probs ``(B, R)`` of the tokens ``input_ids[:, response_start:]`` under a causal LM.

    Only the ``R + 1`` last positions go through the LM head (``logits_to_keep``), so the vocabulary
    projection and softmax never run over the query. Padded response positions come back as 0.
    """
    length = _check_response_start(input_ids, response_start)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
        logits_to_keep=length + 1,
    )
    # The logit at position t predicts token t + 1: drop the one after the last token.
    logits = out.logits[:, -(length + 1) : -1]
    logprobs = _token_logprobs(logits, input_ids[:, response_start:], temperature)
    return logprobs * attention_mask[:, response_start:].to(logprobs.dtype)


def policy_forward(
    policy: PolicyWithValueHead,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs ``(B, R)``, values ``(B, R)`` and temperature-scaled logits ``(B, R, V)`` of the response.

    The value for response token ``t`` is read at position ``t - 1``, the state it was sampled from.
    """
    length = _check_response_start(input_ids, response_start)
    logits, values = policy(input_ids, attention_mask, logits_to_keep=length + 1)
    logits = logits[:, -(length + 1) : -1].float() / temperature
    response_mask = attention_mask[:, response_start:].to(logits.dtype)
    logprobs = _token_logprobs(logits, input_ids[:, response_start:], 1.0) * response_mask
    values = values[:, response_start - 1 : -1] * response_mask
    return logprobs, values, logits


def _causal_lm(model: nn.Module) -> nn.Module:
    """The causal LM inside a PEFT wrapper; its modules carry the adapters, so they stay active."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def query_groups(query_ids: torch.Tensor, query_mask: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """Rows that carry the same query: the first row of each distinct query, in order of first
    appearance, and for every row the index of its query among them (shape ``(B,)``)."""
    firsts: list[int] = []
    seen: dict[tuple[int, ...], int] = {}
    owner = []
    for row, (ids, mask) in enumerate(zip(query_ids.tolist(), query_mask.tolist(), strict=True)):
        key = tuple(i for i, m in zip(ids, mask, strict=True) if m)
        if key not in seen:
            seen[key] = len(firsts)
            firsts.append(row)
        owner.append(seen[key])
    return firsts, torch.tensor(owner, device=query_ids.device)


def response_states(
    model: nn.Module,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """The decoder's last hidden state at the position each response token is predicted from.
    Shape ``(B, R, H)``: column 0 is the query's last state, column ``t`` the state after response
    token ``t - 1``.

    Each distinct query runs once (:func:`query_groups`) and its keys and values are shared by every
    row that carries it; the responses then run on top of them, all but their last token (whose state
    predicts nothing). Gradients flow back through the shared keys and values into the query's pass.
    """
    decoder = _causal_lm(model).get_decoder()
    firsts, owner = query_groups(query_ids, query_mask)
    q_mask = query_mask[firsts].long()
    prefix = decoder(
        input_ids=query_ids[firsts],
        attention_mask=q_mask,
        position_ids=position_ids_from_mask(q_mask),
        use_cache=True,
    )
    first_state = prefix.last_hidden_state[:, -1:][owner]  # left padding: the last column is real
    if response_ids.shape[1] == 1:
        return first_state
    cache = prefix.cache
    if len(firsts) != len(owner):
        cache.batch_select_indices(owner)
    width = response_ids.shape[1] - 1
    start = q_mask.sum(-1, keepdim=True)[owner]
    out = decoder(
        input_ids=response_ids[:, :width],
        attention_mask=torch.cat([query_mask, response_mask[:, :width]], dim=1).long(),
        position_ids=start + torch.arange(width, device=start.device),
        cache=cache,
        use_cache=False,
    )
    return torch.cat([first_state, out.last_hidden_state], dim=1)


def response_forward(
    model: nn.Module,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    value_head: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Log-probs ``(B, R)``, values ``(B, R)`` (None without ``value_head``) and temperature-scaled
    logits ``(B, R, V)`` of the responses, from one trunk pass (:func:`response_states`).

    The LM head, the log-softmax and the value head run on the response positions only; padded
    response positions come back as 0. Equal to :func:`policy_forward` / :func:`logprobs_of` on the
    concatenated rows, up to float rounding.
    """
    states = response_states(model, query_ids, query_mask, response_ids, response_mask)
    causal_lm = _causal_lm(model)
    logits = causal_lm.get_output_embeddings()(states).float()
    softcap = getattr(causal_lm.config.get_text_config(), "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    logits = logits / temperature
    mask = response_mask.to(logits.dtype)
    logprobs = _token_logprobs(logits, response_ids, 1.0) * mask
    values = None
    if value_head is not None:
        values = value_head(states.to(value_head.weight.dtype)).squeeze(-1) * mask
    return logprobs, values, logits


def group_chunks(owner: torch.Tensor, order: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Rows in ``order`` of their groups (``order`` lists group indices), cut into chunks of ``size``
    rows: a prompt's samples stay side by side, so a chunk shares their query."""
    rows_of: dict[int, list[int]] = defaultdict(list)
    for row, group in enumerate(owner.tolist()):
        rows_of[group].append(row)
    rows = torch.tensor([r for g in order.tolist() for r in rows_of[g]], device=owner.device)
    return list(rows.split(size))


def round_minibatch(batch: int, minibatch_size: int) -> int:
    """The largest divisor of ``batch`` up to ``minibatch_size``, so every optimizer step sees as many
    sequences; warns when that is not ``minibatch_size`` itself."""
    size = next(d for d in range(min(minibatch_size, batch), 0, -1) if batch % d == 0)
    if size != minibatch_size:
        warnings.warn(
            f"minibatch_size={minibatch_size} does not divide the batch of {batch} rollouts; "
            f"using minibatch_size={size} ({batch // size} optimizer steps per epoch)",
            stacklevel=3,
        )
    return size


def _reference_context(policy: PolicyWithValueHead, ref_model: nn.Module | None):
    """The module that plays the reference, and a factory of contexts that make it so.

    With no separate ``ref_model`` the policy must be a PEFT model: its base with adapters disabled
    is the reference, which saves a second copy of the weights.
    """
    if ref_model is not None:
        return ref_model, contextlib.nullcontext
    if not hasattr(policy.model, "disable_adapter"):
        raise ValueError("pass ref_model: the policy is not a PEFT model, so it has no adapter to disable")
    return policy.model, policy.model.disable_adapter


@torch.no_grad()
def _rollout_logprobs(
    policy: PolicyWithValueHead,
    ref_model: nn.Module | None,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    temperature: float,
    batch_size: int,
    with_policy: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Old log-probs and values (``with_policy``) and reference log-probs, ``(B, R)`` each, in
    chunks of about ``batch_size`` rows that keep a prompt's samples together."""
    query_ids, query_mask, response_ids, _ = batch
    ref, ref_ctx = _reference_context(policy, ref_model)
    _, owner = query_groups(query_ids, query_mask)
    ref_logprobs = torch.zeros(response_ids.shape, device=response_ids.device)
    old_logprobs = torch.zeros_like(ref_logprobs) if with_policy else None
    values = torch.zeros_like(ref_logprobs) if with_policy else None
    for rows in group_chunks(owner, torch.arange(int(owner.max()) + 1), batch_size):
        chunk = tuple(t[rows] for t in batch)
        if with_policy:
            old_logprobs[rows], values[rows], _ = response_forward(
                policy.model, *chunk, temperature, policy.value_head
            )
        with ref_ctx():
            ref_logprobs[rows] = response_forward(ref, *chunk, temperature)[0]
    return old_logprobs, values, ref_logprobs


def build_rollout(
    policy: PolicyWithValueHead,
    ref_model: nn.Module | None,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    scores: torch.Tensor,
    *,
    temperature: float = 1.0,
    batch_size: int = 16,
) -> Rollout:
    """Score sampled responses under the policy (log-probs and values, one trunk pass) and the
    reference (log-probs), in one no-grad pass over the batch.

    ``query_ids`` are left-padded, ``response_ids`` right-padded; ``ref_model=None`` uses the
    policy's PEFT base with adapters disabled. Runs in chunks of about ``batch_size`` sequences, a
    prompt's samples in one chunk so they share their query (:func:`response_forward`).
    """
    batch = (query_ids, query_mask, response_ids, response_mask)
    old_logprobs, values, ref_logprobs = _rollout_logprobs(
        policy, ref_model, batch, temperature, batch_size, with_policy=True
    )
    return Rollout(*batch, old_logprobs, ref_logprobs, values, scores.float())


def ppo_update(
    policy: PolicyWithValueHead,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    config: PPOConfig,
    kl_coef: float | None = None,
    *,
    first_forward: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> PPOStats:
    """Run ``config.epochs`` passes of minibatch PPO on one rollout batch and return what happened.

    ``kl_coef`` is the controller's current coefficient (``config.init_kl_coef`` when omitted). The
    caller updates its KL controller afterwards with ``stats.kl_to_ref``. ``first_forward`` is the
    policy's :func:`response_forward` over the whole batch, in row order and with gradients, made
    since the policy last changed; the first optimizer step uses it instead of a forward of its own.
    It needs that step to be the whole batch in one micro-batch (:func:`rollout_and_update`).
    """
    kl_coef = config.init_kl_coef if kl_coef is None else float(kl_coef)
    device = next(policy.parameters()).device
    rollout = Rollout(*(field.to(device) for field in rollout))
    mask = rollout.response_mask.float()

    # 1-2. Rewards and advantages are fixed for the whole update: they describe the behaviour policy.
    with torch.no_grad():
        rewards = kl_penalized_rewards(
            rollout.scores, rollout.old_logprobs, rollout.ref_logprobs, mask, kl_coef, config.kl_estimator
        )
        advantages, returns = gae(rewards, rollout.values, mask, config.gamma, config.lam)
        raw_adv_mean = masked_mean(advantages, mask).item()
        if config.whiten_advantages:
            advantages = whiten(advantages, mask)

    # 3. Epochs of shuffled minibatches; a prompt's samples stay together (they share their query).
    query_ids, query_mask = rollout.query_ids, rollout.query_mask
    response_ids = rollout.response_ids
    _, owner = query_groups(query_ids, query_mask)
    minibatch_size = round_minibatch(response_ids.shape[0], config.minibatch_size)
    params = [p for p in policy.parameters() if p.requires_grad]
    micro_size = config.micro_batch_size or minibatch_size
    if first_forward is not None and not _one_pass(response_ids.shape[0], config):
        raise ValueError(
            "first_forward needs the first optimizer step to be the whole batch in one micro-batch"
        )
    sums: dict[str, list[float]] = defaultdict(list)
    for _ in range(config.epochs):
        epoch_kl = []
        order = torch.randperm(int(owner.max()) + 1, device=device)
        for minibatch in group_chunks(owner, order, minibatch_size):
            minibatch_tokens = mask[minibatch].sum().clamp(min=1.0)
            optimizer.zero_grad(set_to_none=True)
            step = defaultdict(float)
            for rows in minibatch.split(micro_size):
                if first_forward is not None:
                    # The policy has not moved since that pass; the loss is a mean, so row order is free.
                    rows = torch.arange(len(rows), device=device)
                    (logprobs, values, logits), first_forward = first_forward, None
                else:
                    logprobs, values, logits = response_forward(
                        policy.model,
                        query_ids[rows],
                        query_mask[rows],
                        response_ids[rows],
                        rollout.response_mask[rows],
                        config.temperature,
                        policy.value_head,
                    )
                m = mask[rows]
                # Token-weighted micro losses add up to the minibatch's token mean exactly.
                weight = m.sum() / minibatch_tokens
                pg_loss, clipfrac, approx_kl = ppo_policy_loss(
                    logprobs, rollout.old_logprobs[rows], advantages[rows], m, config.clip_eps
                )
                vf_loss, vf_clipfrac = ppo_value_loss(
                    values, rollout.values[rows], returns[rows], m, config.clip_eps_value
                )
                with torch.set_grad_enabled(config.ent_coef > 0):
                    entropy = entropy_from_logits(logits, m)
                loss = pg_loss + config.vf_coef * vf_loss - config.ent_coef * entropy
                (loss * weight).backward()
                for name, value in (
                    ("policy_loss", pg_loss),
                    ("value_loss", vf_loss),
                    ("entropy", entropy),
                    ("approx_kl", approx_kl),
                    ("clipfrac", clipfrac),
                    ("value_clipfrac", vf_clipfrac),
                ):
                    step[name] += (value.detach() * weight).item()
            step["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm).item()
            optimizer.step()
            for name, value in step.items():
                sums[name].append(value)
            epoch_kl.append(step["approx_kl"])
        if config.target_approx_kl is not None and sum(epoch_kl) / len(epoch_kl) > config.target_approx_kl:
            break
    optimizer.zero_grad(set_to_none=True)

    def mean(name: str) -> float:
        return sum(sums[name]) / len(sums[name])

    with torch.no_grad():
        kl_to_ref = masked_sum(rollout.old_logprobs - rollout.ref_logprobs, mask, dim=1).mean().item()
        return PPOStats(
            policy_loss=mean("policy_loss"),
            value_loss=mean("value_loss"),
            entropy=mean("entropy"),
            approx_kl=mean("approx_kl"),
            clipfrac=mean("clipfrac"),
            value_clipfrac=mean("value_clipfrac"),
            kl_to_ref=kl_to_ref,
            kl_coef=kl_coef,
            score_mean=rollout.scores.float().mean().item(),
            reward_mean=rewards.sum(dim=1).mean().item(),
            return_mean=masked_mean(returns, mask).item(),
            adv_mean=raw_adv_mean,
            value_mean=masked_mean(rollout.values, mask).item(),
            response_length=mask.sum(dim=1).mean().item(),
            grad_norm=mean("grad_norm"),
            n_updates=len(sums["grad_norm"]),
        )


def _one_pass(batch: int, config: PPOConfig) -> bool:
    """Whether the first optimizer step is one forward over the whole batch."""
    return config.minibatch_size >= batch and (config.micro_batch_size or batch) >= batch


class PPOStep(NamedTuple):
    """What :func:`rollout_and_update` did: the rollout it trained on, the update's statistics, and
    the seconds spent in no-grad forward passes."""

    rollout: Rollout
    stats: PPOStats
    forward_s: float


def rollout_and_update(
    policy: PolicyWithValueHead,
    ref_model: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    scores: torch.Tensor,
    config: PPOConfig,
    *,
    kl_coef: float | None = None,
    forward_batch_size: int = 16,
) -> PPOStep:
    """:func:`build_rollout` then :func:`ppo_update`, without computing anything twice.

    When the update's first optimizer step is one forward over the whole batch (one minibatch, one
    micro-batch: the defaults at 8 rollouts), that forward happens before any step, while the policy
    is still the one that sampled: its detached log-probs and values *are* the rollout's, so only the
    reference runs without gradients, and the first step reuses the forward. Otherwise the rollout
    is built first, as :func:`build_rollout` does. Either way the update is the same, up to float
    rounding.
    """
    began = time.perf_counter()
    batch = (query_ids, query_mask, response_ids, response_mask)
    if not _one_pass(query_ids.shape[0], config):
        rollout = build_rollout(
            policy, ref_model, *batch, scores, temperature=config.temperature, batch_size=forward_batch_size
        )
        forward_s = time.perf_counter() - began
        return PPOStep(rollout, ppo_update(policy, optimizer, rollout, config, kl_coef), forward_s)
    _, _, ref_logprobs = _rollout_logprobs(
        policy, ref_model, batch, config.temperature, forward_batch_size, with_policy=False
    )
    forward_s = time.perf_counter() - began
    first = response_forward(policy.model, *batch, config.temperature, policy.value_head)
    rollout = Rollout(*batch, first[0].detach(), ref_logprobs, first[1].detach(), scores.float())
    stats = ppo_update(policy, optimizer, rollout, config, kl_coef, first_forward=first)
    return PPOStep(rollout, stats, forward_s)
