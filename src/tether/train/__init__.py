"""Training: SFT and DPO through TRL, the Bradley–Terry reward model, Tether's own PPO, and the
monitors that watch it for collapse and reward hacking. Every trainer takes a model spec and writes
a LoRA adapter directory (with ``tether_base.json``) that any command loads like a model.

Read in this order: ``lora`` (adapters, the TRL glue), ``sft``, ``dpo``, ``reward``, ``ppo`` (value
head, GAE, clipped losses, adaptive KL, the trainer), ``monitors``.

Names are imported lazily so that importing a config does not load torch.
"""

from importlib import import_module

_EXPORTS = {
    "LoRAConfig": "lora",
    "base_spec_of": "lora",
    "is_adapter_dir": "lora",
    "SFTTrainConfig": "sft",
    "train_sft": "sft",
    "DPOTrainConfig": "dpo",
    "train_dpo": "dpo",
    "RewardConfig": "reward",
    "RewardModel": "reward",
    "RewardReport": "reward",
    "train_reward_model": "reward",
    "PPOTrainConfig": "ppo.trainer",
    "PPOResult": "ppo.trainer",
    "RewardModelScorer": "ppo.trainer",
    "train_ppo": "ppo.trainer",
    "Alert": "monitors",
    "Embedder": "monitors",
    "MonitorConfig": "monitors",
    "MonitorState": "monitors",
    "StepMetrics": "monitors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"tether.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'tether.train' has no attribute {name!r}")
