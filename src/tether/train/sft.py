"""Supervised fine-tuning on (prompt, completion) examples, via TRL's SFTTrainer.

``train_sft(model_spec, examples, out_dir, config)`` returns the directory of the trained adapter
(LoRA by default), loadable with ``tether.models.load(out_dir)``. From an adapter directory the same
adapter keeps training (how CAI round N+1 continues round N).

Loss is on the completion only (TRL's prompt-completion format). With ``chat=True`` the prompt is a
user message and the completion the assistant's reply, rendered with the model's chat template,
exactly as the engine renders prompts at generation time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.config import StrictModel
from tether.errors import DataError
from tether.train.lora import (
    LoRAConfig,
    load_trainable,
    save_trained,
    tracer_callback,
    trainer_precision,
    write_train_log,
)


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
    dataset = examples_dataset(examples, chat=config.chat)
    out = Path(out_dir)
    trainable = load_trainable(model_spec, config.lora, device=config.device)
    args = SFTConfig(
        output_dir=str(out / ".trainer"),
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_length=config.max_length,
        warmup_steps=config.warmup_steps,
        gradient_checkpointing=config.gradient_checkpointing,
        completion_only_loss=True,
        logging_steps=config.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **trainer_precision(trainable.device),
    )
    trainer = SFTTrainer(
        model=trainable.model,
        args=args,
        train_dataset=dataset,
        processing_class=trainable.tokenizer,
        callbacks=[tracer_callback(tracer, stage)],
    )
    began = time.perf_counter()
    trainer.train()
    trainable.model = trainer.model
    save_trained(trainable, out)
    write_train_log(
        out,
        trainer.state.log_history,
        trainer="sft",
        model_spec=str(model_spec),
        base=trainable.base_spec,
        continued_adapter=trainable.continued_adapter,
        examples=len(dataset),
        seconds=round(time.perf_counter() - began, 2),
        config=config.model_dump(mode="json"),
    )
    return out
