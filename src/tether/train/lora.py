"""LoRA settings and adapter bookkeeping shared by every trainer (SFT, DPO, reward, PPO).

An adapter directory Tether writes always holds ``tether_base.json`` ({"base": <spec>}) so that
``tether.models.load(adapter_dir)`` finds its base whatever ``base_model_name_or_path`` says (for the
default model that is a cache directory, which moves between machines).

Continuing from an adapter trains *the same* adapter further (its base stays the root base spec), so
round N of CAI is one adapter on the base, loadable by its directory alone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from tether.config import StrictModel
from tether.errors import ConfigError

log = logging.getLogger(__name__)

BASE_FILE = "tether_base.json"


class LoRAConfig(StrictModel):
    """LoRA adapter shape. The defaults match the measurements in docs/architecture.md (r16, all linear layers)."""

    r: int = Field(16, ge=1, description="Rank of the low-rank update.")
    alpha: int = Field(32, ge=1, description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="'all-linear' or a list of module names (e.g. [q_proj, v_proj])."
    )


def peft_config(
    config: LoRAConfig,
    task_type: str = "CAUSAL_LM",
    *,
    model: Any = None,
    last_layers: int | None = None,
):
    """The ``peft.LoraConfig`` for ``config``.

    ``last_layers`` (needs ``model``) puts LoRA only on the last N transformer blocks, so the backward
    pass stops at the first adapted block (nothing below it needs a gradient). ``all-linear`` is then
    spelled out as the blocks' linear module names, since PEFT restricts layers only for a name list.
    ``None``, or N at least the model's depth, adapts every block.
    """
    from peft import LoraConfig

    target: str | list[str] = config.target_modules
    layers: dict[str, Any] = {}
    if last_layers is not None:
        if model is None:
            raise ValueError("peft_config(last_layers=...) needs the model to count its layers")
        pattern, depth, linear_names = transformer_blocks(model)
        if last_layers < depth:
            if target == "all-linear":
                target = linear_names
            elif isinstance(target, str):
                raise ConfigError(
                    f"LoRA on the last {last_layers} layers needs target_modules 'all-linear' or a "
                    f"list of module names, not the pattern {target!r}",
                    where="lora.target_modules",
                    hint="list the modules, e.g. [q_proj, v_proj], or set the layer count to null",
                )
            layers = {
                "layers_to_transform": list(range(depth - last_layers, depth)),
                "layers_pattern": pattern,
            }
    return LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=target,
        task_type=task_type,
        **layers,
    )


def transformer_blocks(model: Any) -> tuple[str, int, list[str]]:
    """``(attribute name, count, linear module names)`` of the model's stack of transformer blocks.

    The stack is the first ``nn.ModuleList`` as long as ``config.num_hidden_layers`` (``model.layers``
    for Llama/Qwen/Mistral, ``transformer.h`` for GPT-2); the names are the leaf names of its linear
    layers (``q_proj``, ..., ``down_proj``), which never include the LM head.
    """
    from torch import nn

    config = model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    depth = int(config.num_hidden_layers)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            linear = {
                sub.rsplit(".", 1)[-1]
                for sub, leaf in module.named_modules()
                if isinstance(leaf, nn.Linear) or type(leaf).__name__ == "Conv1D"
            }
            if linear:
                return name.rsplit(".", 1)[-1], depth, sorted(linear)
    raise ConfigError(
        f"cannot find the {depth} transformer blocks of {type(model).__name__}",
        hint="set the LoRA layer count to null (adapt every layer)",
    )


def is_adapter_dir(spec: str | Path) -> bool:
    path = Path(str(spec)).expanduser()
    return path.is_dir() and (path / "adapter_config.json").exists()


def base_spec_of(spec: str | Path) -> str:
    """The root base model spec under ``spec`` (``spec`` itself when it is not an adapter directory).

    A relative local path is made absolute, so the spec still resolves from another working directory.
    """
    spec = str(spec)
    if not is_adapter_dir(spec):
        path = Path(spec).expanduser()
        return str(path.resolve()) if path.exists() else spec
    adapter = Path(spec).expanduser()
    recorded = adapter / BASE_FILE
    if recorded.exists():
        return base_spec_of(json.loads(recorded.read_text(encoding="utf-8"))["base"])
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    return base_spec_of(config.get("base_model_name_or_path") or "default")


def write_base_file(adapter_dir: str | Path, base_spec: str) -> None:
    Path(adapter_dir, BASE_FILE).write_text(json.dumps({"base": base_spec}) + "\n", encoding="utf-8")


@dataclass
class TrainableModel:
    """A model ready for a trainer: a PEFT model (fresh or continued adapter) or a full model."""

    model: Any
    tokenizer: Any
    base_spec: str
    continued_adapter: bool  # True when ``spec`` was an adapter directory that we keep training
    device: torch.device


def load_trainable(spec: str, lora: LoRAConfig | None, *, device: str = "auto") -> TrainableModel:
    """Load ``spec`` for training.

    * adapter directory: its adapter, trainable (``lora`` is ignored: the adapter keeps its shape);
    * base spec and ``lora``: the base with a fresh LoRA adapter;
    * base spec and ``lora=None``: the full model, every parameter trainable.
    """
    from tether.models import load

    base = base_spec_of(spec)
    if is_adapter_dir(spec):
        loaded = load(str(spec), device=device, trainable=True)
        model, continued = loaded.model, True
    else:
        loaded = load(str(spec), device=device, trainable=True)
        model, continued = loaded.model, False
        if lora is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config(lora))
    model.train()
    tokenizer = loaded.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return TrainableModel(
        model=model, tokenizer=tokenizer, base_spec=base, continued_adapter=continued, device=loaded.device
    )


def save_trained(trainable: TrainableModel, out_dir: str | Path) -> Path:
    """Save what was trained: the ``default`` adapter plus ``tether_base.json``, or the full model."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = trainable.model
    if hasattr(model, "peft_config"):
        # Trainers may add helper adapters (TRL's frozen "ref" copy for DPO); only "default" is the result.
        model.save_pretrained(str(out), selected_adapters=["default"])
        write_base_file(out, trainable.base_spec)
    else:
        model.save_pretrained(str(out), safe_serialization=True)
    trainable.tokenizer.save_pretrained(str(out))
    return out


def lora_state(model: Any) -> dict[str, torch.Tensor]:
    """A detached copy of every LoRA parameter (tests compare it before and after training)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def trainer_precision(device: torch.device) -> dict[str, bool]:
    """TRL 1.16 defaults to bf16=True, which fails on CPU (and is ~7x slower there anyway)."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": False, "use_cpu": False}
    return {"bf16": False, "fp16": False, "use_cpu": True}


def tracer_callback(tracer: Any, stage: str):
    """A TrainerCallback that writes every logged step (loss, lr, ...) to a run's traces.jsonl, and
    a ``train_step STAGE`` span per logged interval (from the previous log, or the start of
    training, to this one) with the logged numbers as ``tether.train.*``."""
    import time

    from transformers import TrainerCallback

    from tether import tracing

    class _TraceLogs(TrainerCallback):
        since = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.since = time.time_ns()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                log.info("%s step %d: %s", stage, state.global_step, logs)  # the run's log.txt
            if tracer is not None and logs:
                tracer.record(kind="train", stage=stage, step=state.global_step, **logs)
            if logs:
                now = time.time_ns()
                numbers = {f"tether.train.{k}": v for k, v in logs.items() if isinstance(v, int | float)}
                tracing.item_span(
                    f"train_step {stage}",
                    self.since or now,
                    now,
                    {"tether.stage": stage, "tether.train.step": state.global_step, **numbers},
                )
                self.since = now

    return _TraceLogs()


def _step_bar(bar: Any):
    from transformers import TrainerCallback

    class _StepBar(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            bar.advance(1)

    return _StepBar()


def write_train_log(out_dir: str | Path, log_history: list[dict], **info: Any) -> Path:
    """``train_log.json`` beside the weights: the settings and every logged step."""
    path = Path(out_dir) / "train_log.json"
    path.write_text(json.dumps({**info, "log_history": log_history}, indent=2, default=str), encoding="utf-8")
    return path


class TRLTrainConfig(StrictModel):
    """What every TRL-trained stage (SFT, DPO) is configured by; ``fit_with_trl`` reads these."""

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


def fit_with_trl(
    trainer_cls: Any,
    args_cls: Any,
    *,
    kind: str,
    model_spec: str,
    config: TRLTrainConfig,
    dataset: Any,
    out_dir: str | Path,
    tracer: Any = None,
    stage: str = "",
    counted: str = "examples",
    **extra_args: Any,
) -> Path:
    """Train ``model_spec`` with one of TRL's trainers (SFT, DPO) and save the adapter plus its log.

    ``extra_args`` are the trainer-specific arguments (``beta``, ``completion_only_loss``). ``out_dir``
    then holds the adapter, ``tether_base.json``, the tokenizer and ``train_log.json``.
    """
    out = Path(out_dir)
    trainable = load_trainable(model_spec, config.lora, device=config.device)
    args = args_cls(
        output_dir=str(out / ".trainer"),
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_length=config.max_length,
        warmup_steps=config.warmup_steps,
        gradient_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # LoRA: every trainable weight is used in each forward
        **extra_args,
        **trainer_precision(trainable.device),
    )
    trainer = trainer_cls(
        model=trainable.model,
        args=args,
        train_dataset=dataset,
        processing_class=trainable.tokenizer,
        callbacks=[tracer_callback(tracer, stage or kind)],
    )
    # With its bars off the Trainer prints each step's dict raw to stdout; the callback above logs it.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    began = time.perf_counter()
    from tether.progress import progress_bar

    # A bar on stderr, one step at a time: a CPU step can take tens of seconds.
    with progress_bar(f"train {stage or kind}", total=config.max_steps) as bar:
        trainer.add_callback(_step_bar(bar))
        trainer.train()
    trainable.model = trainer.model
    # Under `accelerate launch` every process trains (gradients all-reduced); one writes.
    if trainer.accelerator.is_main_process:
        save_trained(trainable, out)
        write_train_log(
            out,
            trainer.state.log_history,
            trainer=kind,
            model_spec=str(model_spec),
            base=trainable.base_spec,
            continued_adapter=trainable.continued_adapter,
            **{counted: len(dataset)},
            processes=trainer.accelerator.num_processes,
            seconds=round(time.perf_counter() - began, 2),
            config=config.model_dump(mode="json"),
        )
    trainer.accelerator.wait_for_everyone()
    return out
