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

from pydantic import Field

from tether.config import StrictModel
from tether.errors import DataError
from tether.train.lora import LoRAConfig, fit_with_trl


class SFTTrainConfig(StrictModel):
    """SFT settings. Defaults are sized for a CPU demo (DESIGN.md §5: ~25 s/step at 8x256 on 135M)."""

    max_steps: int = Field(8, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(2e-4, gt=0.0, description="Peak learning rate (LoRA).")
    batch_size: int = Field(4, ge=1, description="Examples per device per step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(256, ge=16, description="Tokens kept per example (prompt + completion).")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    lora: LoRAConfig | None = Field(
        default_factory=LoRAConfig, description="LoRA shape for a fresh adapter; null = full fine-tune."
    )
    chat: bool = Field(True, description="Treat prompts as user messages and apply the chat template.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (off: short CPU runs).")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    seed: int = Field(0, description="Seed for data order and LoRA init.")
    logging_steps: int = Field(1, ge=1, description="Log (and trace) every this many steps.")


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
