"""Interpretability (issue #20): named hook points on HF decoders, the refusal direction (ablation,
addition, drift across checkpoints) and causal tracing. docs/architecture.md, "Interpretability".

The public names are the configs (cheap to import); the torch-side API lives in
``tether.interp.hooks`` (``hooked``, ``run_with_cache``, ``find_layers``, ablation/addition/patch
hooks), ``tether.interp.directions`` (``orthogonalised`` and the pure functions),
``tether.interp.refusal`` (``run_refusal_direction``) ``tether.interp.trace`` (``run_trace``) ``tether.interp.patch`` (``run_patch``) and ``tether.interp.reward`` (``run_reward_attribution``).
"""

from tether.interp.config import PatchConfig, RefusalDirectionConfig, RewardAttributionConfig, TraceConfig

__all__ = ["PatchConfig", "RefusalDirectionConfig", "RewardAttributionConfig", "TraceConfig"]
