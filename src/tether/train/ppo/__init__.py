"""Tether's own PPO for RLHF: typed rollouts, pure loss functions, KL control, a value head, one update.

Read in this order: ``types`` (what flows, and the reward protocol that scores it), ``losses`` (the
math), ``kl`` (penalty control), ``value_head`` (the policy), ``step`` (one update that ties them together).
"""

from tether.train.ppo.kl import AdaptiveKLController, FixedKLController, KLController
from tether.train.ppo.losses import (
    KLEstimator,
    entropy_from_logits,
    gae,
    kl_penalized_rewards,
    kl_per_token,
    masked_mean,
    masked_var,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)
from tether.train.ppo.step import (
    PPOConfig,
    PPOStep,
    build_rollout,
    logprobs_of,
    make_kl_controller,
    policy_forward,
    ppo_update,
    response_forward,
    rollout_and_update,
)
from tether.train.ppo.types import BatchScores, FunctionReward, PPOStats, ResponseScorer, Reward, Rollout
from tether.train.ppo.value_head import PolicyWithValueHead, disable_dropout

__all__ = [
    "AdaptiveKLController",
    "BatchScores",
    "FixedKLController",
    "FunctionReward",
    "KLController",
    "KLEstimator",
    "PPOConfig",
    "PPOStats",
    "PPOStep",
    "PolicyWithValueHead",
    "ResponseScorer",
    "Reward",
    "Rollout",
    "build_rollout",
    "disable_dropout",
    "entropy_from_logits",
    "gae",
    "kl_penalized_rewards",
    "kl_per_token",
    "logprobs_of",
    "make_kl_controller",
    "masked_mean",
    "masked_var",
    "policy_forward",
    "ppo_policy_loss",
    "ppo_update",
    "ppo_value_loss",
    "response_forward",
    "rollout_and_update",
    "whiten",
]
