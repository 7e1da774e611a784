"""Supervised fine-tuning on (prompt, completion) examples, via TRL's SFTTrainer.

``train_sft(model_spec, examples, out_dir, config)`` returns the directory of the trained adapter
(LoRA by default), loadable with ``tether.models.load(out_dir)``. From an adapter directory the same
adapter keeps training (how CAI round N+1 continues round N).

Loss is on the completion only (TRL's prompt-completion format). With ``chat=True`` the prompt is a
user message and the completion the assistant's reply, rendered with the model's chat template,
exactly as the engine renders prompts at generation time.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tether.errors import DataError
from tether.train.lora import TRLTrainConfig, fit_with_trl


class SFTTrainConfig(TRLTrainConfig):
    """SFT settings. Defaults are sized for a CPU demo (docs/architecture.md, "What a 2-core CPU does": ~25 s a step at 8x256 on 135M)."""


def _field(example: Any, name: str) -> str:
    value = example.get(name) if isinstance(example, dict) else getattr(example, name, None)
    if not isinstance(value, str):
        raise DataError(
            f"SFT example has no string '{name}'", hint="each example needs prompt and completion strings"
        )
    return value


def examples_dataset(examples: Iterable[Any], *, chat: bool = True):
    """A ``datasets.Dataset`` in TRL's prompt-completion format (conversational when ``chat``)."""
    from datasets import Dataset

    rows = []
    for example in examples:
        prompt, completion = _field(example, "prompt"), _field(example, "completion")
        if chat:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "completion": [{"role": "assistant", "content": completion}],
                }
            )
        else:
            rows.append({"prompt": prompt, "completion": completion})
    if not rows:
        raise DataError(
            "no SFT examples to train on", hint="the revision stage kept no examples; check its filters"
        )
    return Dataset.from_list(rows)


def train_sft(
    model_spec: str,
    examples: Iterable[Any],
    out_dir: str | Path,
    config: SFTTrainConfig | None = None,
    *,
    tracer: Any = None,
    stage: str = "sft",
) -> Path:
    """Fine-tune ``model_spec`` (base spec or adapter dir) on ``examples``; return ``out_dir``.

    ``out_dir`` then holds the adapter, ``tether_base.json``, the tokenizer and ``train_log.json``.
    """
    from trl import SFTConfig, SFTTrainer

    config = config or SFTTrainConfig()
    return fit_with_trl(
        SFTTrainer,
        SFTConfig,
        kind="sft",
        model_spec=model_spec,
        config=config,
        dataset=examples_dataset(examples, chat=config.chat),
        out_dir=out_dir,
        tracer=tracer,
        stage=stage,
        counted="examples",
        completion_only_loss=True,
    )
