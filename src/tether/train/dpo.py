"""Direct Preference Optimization on (prompt, chosen, rejected) pairs, via TRL's DPOTrainer.

``train_dpo(model_spec, pairs, out_dir, config)`` returns the directory of the trained adapter (LoRA
by default), loadable with ``tether.models.load(out_dir)``.

The reference model is the starting model, frozen:
  * from a base spec, a fresh LoRA adapter is trained and the reference is the base (adapter off);
  * from an adapter directory (e.g. the SFT adapter), that adapter keeps training and TRL keeps a
    frozen copy of it as the reference ("ref" adapter), so DPO pulls away from the SFT policy, not
    from the raw base. Only the trained adapter is saved.

Prompts are user messages: with ``chat=True`` (default) pairs are passed to TRL in conversational
form, so TRL applies the same chat template the engine uses for generation.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.errors import DataError
from tether.train.lora import TRLTrainConfig, fit_with_trl


class DPOTrainConfig(TRLTrainConfig):
    """DPO settings. Defaults are sized for a CPU demo (docs/architecture.md, "What a 2-core CPU does": ~37 s a step at batch 4 on 135M)."""

    beta: float = Field(
        0.1, gt=0.0, description="KL strength: higher keeps the policy closer to the reference."
    )
    learning_rate: float = Field(5e-5, gt=0.0, description="Peak learning rate (LoRA tolerates ~1e-4).")
    batch_size: int = Field(4, ge=1, description="Pairs per device per step.")
    max_length: int = Field(256, ge=16, description="Prompt + answer tokens kept per sequence.")


def _field(pair: Any, name: str) -> str:
    value = pair.get(name) if isinstance(pair, dict) else getattr(pair, name, None)
    if not isinstance(value, str):
        raise DataError(
            f"preference pair has no string '{name}'",
            hint="each pair needs prompt, chosen and rejected strings (tether.feedback.PreferencePair or a dict)",
        )
    return value


def pairs_dataset(pairs: Iterable[Any], *, chat: bool = True):
    """A ``datasets.Dataset`` in TRL's preference format (conversational when ``chat``)."""
    from datasets import Dataset

    rows = []
    for pair in pairs:
        prompt, chosen, rejected = (_field(pair, k) for k in ("prompt", "chosen", "rejected"))
        if chat:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        else:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    if not rows:
        raise DataError("no preference pairs to train on", hint="generate or label some pairs first")
    return Dataset.from_list(rows)


def train_dpo(
    model_spec: str,
    pairs: Iterable[Any],
    out_dir: str | Path,
    config: DPOTrainConfig | None = None,
    *,
    tracer: Any = None,
    stage: str = "dpo",
) -> Path:
    """Train with DPO from ``model_spec`` (base spec or adapter dir) on ``pairs``; return ``out_dir``.

    ``out_dir`` then holds the adapter, ``tether_base.json``, the tokenizer and ``train_log.json``.
    """
    from trl import DPOConfig, DPOTrainer

    config = config or DPOTrainConfig()
    return fit_with_trl(
        DPOTrainer,
        DPOConfig,
        kind="dpo",
        model_spec=model_spec,
        config=config,
        dataset=pairs_dataset(pairs, chat=config.chat),
        out_dir=out_dir,
        tracer=tracer,
        stage=stage,
        counted="pairs",
        beta=config.beta,
    )
