"""``FrontierConfig``: which mitigation candidates to build and how to audit them (YAML + ``--set``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from tether.config import EngineConfig, StrictModel

Alpha = Annotated[float, Field(ge=0.0, le=1.0)]


def _distinct_sorted(values: list, ok, message: str) -> list:
    """The values sorted without repeats; the first one ``ok`` rejects is an error."""
    bad = [v for v in values if not ok(v)]
    if bad:
        raise ValueError(f"{message}, got {bad[0]}")
    return sorted(set(values))


class InterpolationConfig(StrictModel):
    """Weight interpolation (Lin et al. 2023): θ = (1 − α)·θ_base + α·θ_aligned; a LoRA adapter's
    delta is scaled by α instead."""

    enabled: bool = Field(True, description="Build one candidate per α.")
    alphas: list[Alpha] = Field(
        default_factory=lambda: [round(0.1 * i, 1) for i in range(11)],
        description="Weights on ALIGNED, each in [0, 1]: 0 is BASE, 1 is ALIGNED.",
    )


class PerBlockConfig(StrictModel):
    """Per-block interpolation ("heterogeneous model averaging"): the decoder layers cut into
    contiguous blocks, one α each, chosen by a grid search on the validation side of the tasks."""

    enabled: bool = Field(True, description="Run the search and audit the chosen per-block candidates.")
    blocks: int = Field(
        3,
        ge=1,
        description="Contiguous blocks of decoder layers (embeddings go with the first, the head with the last).",
    )
    grid: list[Alpha] = Field(
        default_factory=lambda: [0.0, 0.5, 1.0],
        min_length=1,
        description="α values each block may take: len(grid)**blocks combinations are audited on validation items.",
    )
    keep: int = Field(
        3, ge=1, description="Per-block candidates carried from the validation frontier to the test audit."
    )
    validation_limit: int | None = Field(
        None, ge=1, description="Items per task on the validation side (default: the audit limit)."
    )
    levels: int = Field(
        0,
        ge=0,
        description="Safety levels at which per-block is compared with a single α (Lin et al.'s question; "
        "0 = off). The interpolation α's are audited on the validation side too; at each level each family's "
        "best validation candidate is audited on the test side and the two are compared there.",
    )


class MergeConfig(StrictModel):
    """A merge of the aligned adapter with the capability adapter through PEFT, on their weight
    deltas (task vectors), not on their A and B factors apart (``CandidateBuilder._merge``)."""

    method: Literal["linear", "ties", "dare_linear", "dare_ties"] = Field(
        ...,
        description="linear: w_aligned * delta_aligned + w_capability * delta_capability, exact (PEFT's "
        "add_weighted_adapter 'cat'; with weights (1 - w, w) a rewarded soup); ties, dare_linear, dare_ties: "
        "PEFT's merge_utils on each LoRA'd module's two deltas.",
    )
    weights: tuple[float, float] = Field((1.0, 1.0), description="Weights of (aligned, capability).")
    density: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Fraction of each delta kept (TIES trim, DARE keep); unused by linear.",
    )


class ReplayConfig(StrictModel):
    """Capability replay (InstructGPT's PPO-ptx idea, for SFT): ALIGNED's training redone from BASE
    with the same settings (its ``train_log.json``) on its own data plus capability examples, a
    share ``fraction`` of the mix. The examples are validation-side items of ``tasks`` (question →
    correct answer), so the reported test side is never trained on."""

    fractions: list[float] = Field(
        default_factory=list,
        description="Capability shares of the training mix, each in (0, 1), e.g. [0.01, 0.05, 0.2]; one "
        "retrained candidate each.",
    )
    data: str | None = Field(
        None,
        description="ALIGNED's SFT data, JSONL of {prompt, completion} (default: sft_data.jsonl beside the "
        "ALIGNED adapter directory, where `tether cai run` writes it).",
    )
    tasks: str = Field(
        "arc_easy,sciq", description="Capability tasks whose validation-side items are replayed."
    )

    @field_validator("fractions")
    @classmethod
    def _shares(cls, value: list[float]) -> list[float]:
        return _distinct_sorted(
            value, lambda f: 0.0 < f < 1.0, "replay fractions must be strictly between 0 and 1"
        )


class RetrainConfig(StrictModel):
    """Targeted retraining: ALIGNED's adapter trained a little further on the capability the failure
    analysis says it lost. A validation-side audit of BASE and ALIGNED on the scored tasks flags the
    tasks and categories where ALIGNED regressed significantly (paired, after the audit's
    multiple-comparison control); when none is significant, those whose point estimate fell. The
    examples are validation-side items of the flagged domains (question → correct answer), mixed with
    a share of ALIGNED's own SFT data so the safety it learned is rehearsed too."""

    steps: list[int] = Field(
        default_factory=list,
        description="Optimizer steps of the short SFT, one candidate each (e.g. [10, 30]); [] = off.",
    )
    tasks: str | None = Field(
        None, description="Scored tasks the failure analysis looks at (default: the scored ones in `tasks`)."
    )
    limit: int | None = Field(
        None, ge=1, description="Validation-side items per task in the failure analysis (default: `limit`)."
    )
    learning_rate: float = Field(1e-4, gt=0.0, description="Peak learning rate of the short SFT.")
    batch_size: int = Field(8, ge=1, description="Examples per step.")
    max_examples: int = Field(
        400, ge=1, description="Capability examples at most (sampled from the flagged domains)."
    )
    aligned_share: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="Share of the mix taken from ALIGNED's SFT data (retrain.data or sft_data.jsonl beside it).",
    )
    data: str | None = Field(
        None, description="ALIGNED's SFT data (default: sft_data.jsonl beside the adapter)."
    )

    @field_validator("steps")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        return _distinct_sorted(value, lambda v: v >= 1, "retrain steps must be at least 1")


class MultiObjectiveConfig(StrictModel):
    """Multi-objective preference training: ALIGNED's adapter trained further with DPO on a mix of
    safety and helpfulness pairs, helpfulness making up λ / (1 + λ) of it; one candidate per λ. The
    pairs come from the validation side only: where BASE and ALIGNED answer a task's item
    differently, the better answer by the task's metric is chosen (``tether.frontier.multi``)."""

    lambdas: list[float] = Field(
        default_factory=list,
        description="Helpfulness weights λ >= 0, one candidate each (e.g. [0.5, 1, 2]); [] = off.",
    )
    safety_tasks: str = Field(
        "harmful_refusal", description="Generation tasks whose BASE/ALIGNED disagreements are safety pairs."
    )
    helpful_tasks: str = Field(
        "overrefusal,arc_easy,sciq",
        description="Helpfulness pairs: generation tasks as above; multiple-choice tasks give correct-vs-wrong "
        "answers. Each task gets an equal share of the helpful pairs.",
    )
    limit: int | None = Field(
        None, ge=1, description="Validation-side items per generation task (default: `limit`)."
    )
    max_new_tokens: int = Field(
        160, ge=1, description="Length the judged answers are regenerated to (greedy) for training."
    )
    pairs: int = Field(
        80,
        ge=1,
        description="Pairs in each λ's mix (small pools are repeated evenly); steps × batch_size is one pass.",
    )
    steps: int = Field(20, ge=1, description="DPO optimizer steps.")
    learning_rate: float = Field(1e-4, gt=0.0, description="Peak learning rate of the DPO.")
    beta: float = Field(0.1, gt=0.0, description="DPO β: higher keeps the candidate closer to ALIGNED.")
    batch_size: int = Field(4, ge=1, description="Pairs per step.")
    seed: int | None = Field(
        None,
        description="Seed of each λ's pair draw and of the DPO (default: the frontier's `seed`); another value "
        "retrains on the same pairs and audit items, to see the run-to-run spread.",
    )

    @field_validator("lambdas")
    @classmethod
    def _weights(cls, value: list[float]) -> list[float]:
        return _distinct_sorted(value, lambda v: v >= 0, "λ must be >= 0")


class RecoveryConfig(StrictModel):
    """What the report measures recovery against (``tether.frontier.recovery``): per candidate, the
    share of the unmitigated model's gain it keeps and of its loss it recovers, and whether an
    operating point meets both bars."""

    unmitigated: str | None = Field(
        None,
        description="The unmitigated aligned model the shares are measured against, when ALIGNED is itself "
        "a mitigation (a chain, e.g. the replay adapter as ALIGNED): a LoRA adapter on BASE. Default: ALIGNED.",
    )
    keep: float = Field(
        0.9, ge=0.0, description="Bar on every gain kept (issue #18: 90% of harmful refusal)."
    )
    recover: float = Field(
        0.7,
        ge=0.0,
        description="Bar on every loss recovered (issue #18: 70% of capability and over-refusal).",
    )
    bootstrap: int = Field(2000, ge=100, description="Bootstrap resamples behind each share's interval.")
    fresh_from_seed: int | None = Field(
        None,
        description="A confirmation: the shares are computed only on test-side items outside the default "
        "sample of this seed (the items a frontier run with that seed reported, which choosing the "
        "candidates may have read). Use with full: true.",
    )


class FrontierConfig(StrictModel):
    """``tether frontier BASE ALIGNED``: candidates between BASE and ALIGNED, each audited on the test
    side of the tasks; the per-block search reads only the validation side."""

    tasks: str = Field("quick", description="Audit tasks or sets, comma-separated (see `tether audit`).")
    limit: int | None = Field(
        None,
        ge=1,
        description="Items per task on the test side, at most (default: each task's default sample).",
    )
    seed: int = Field(0, description="Sampling seed of the audit items.")
    full: bool = Field(
        False,
        description="Audit every test-side item instead of each task's default sample (`limit` still caps).",
    )
    validation_fraction: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="Share of each task's items on the validation side (split by a hash of the item id).",
    )
    interpolation: InterpolationConfig = Field(default_factory=InterpolationConfig)
    per_block: PerBlockConfig = Field(default_factory=PerBlockConfig)
    capability_adapter: str | None = Field(
        None, description="A LoRA adapter on BASE trained for capability; needed by merges."
    )
    merges: list[MergeConfig] = Field(
        default_factory=list, description="Linear, TIES and DARE merges of ALIGNED with capability_adapter."
    )
    replay: ReplayConfig = Field(
        default_factory=lambda: ReplayConfig(),
        description="Capability replay: ALIGNED's SFT redone from BASE with capability examples mixed in.",
    )
    retrain: RetrainConfig = Field(
        default_factory=lambda: RetrainConfig(),
        description="Targeted retraining: ALIGNED trained a little further on the capability domains it lost.",
    )
    multi_objective: MultiObjectiveConfig = Field(
        default_factory=lambda: MultiObjectiveConfig(),
        description="Multi-objective preference training: DPO on a λ-weighted mix of safety and helpfulness pairs.",
    )
    recovery: RecoveryConfig = Field(
        default_factory=lambda: RecoveryConfig(),
        description="Shares of the alignment gain kept and of its tax recovered, per candidate.",
    )
    reference: tuple[float, float] = Field(
        (0.0, 0.0),
        description="Hypervolume reference point (safety, capability), both axes oriented higher-is-better.",
    )
    cache: str | None = Field(
        None,
        description="Per-item audit cache file (default: audit.sqlite in the run directory, or $TETHER_CACHE).",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @field_validator("multi_objective", mode="before")
    @classmethod
    def _multi_section(cls, value):
        # Configs and manifests from before multi-objective training was built say `multi_objective: []`.
        if value is None or value == []:
            return {}
        if isinstance(value, list):
            raise ValueError(
                "multi_objective is a section now: set multi_objective.lambdas, e.g. [0.5, 1, 2]"
            )
        return value

    @field_validator("retrain", mode="before")
    @classmethod
    def _retrain_section(cls, value):
        # Configs and manifests from before targeted retraining was built say `retrain: false`.
        if value is False or value is None:
            return {}
        if value is True:
            raise ValueError("retrain is a section now: set retrain.steps, e.g. [10, 30]")
        return value

    @model_validator(mode="after")
    def _some_candidate(self) -> FrontierConfig:
        interp = self.interpolation.enabled and bool(self.interpolation.alphas)
        if not (
            interp
            or self.per_block.enabled
            or self.merges
            or self.replay.fractions
            or self.retrain.steps
            or self.multi_objective.lambdas
        ):
            raise ValueError(
                "no candidates: interpolation.alphas is empty or disabled, per_block is disabled, merges, "
                "replay.fractions, retrain.steps and multi_objective.lambdas are empty"
            )
        if self.per_block.levels and not (self.per_block.enabled and interp):
            raise ValueError(
                "per_block.levels compares per-block with a single α: it needs per_block.enabled and "
                "interpolation.alphas"
            )
        if self.merges and not self.capability_adapter:
            raise ValueError("merges need capability_adapter (a LoRA adapter on BASE)")
        return self


def _has_generation_task(config: FrontierConfig) -> None:
    from tether.errors import ConfigError, TetherError
    from tether.evals.registry import resolve_tasks

    names = config.multi_objective.safety_tasks
    try:
        tasks = resolve_tasks(names) if names else []
    except TetherError:
        return  # an unknown task name is reported by its own check
    if not any(t.kind == "generate" for t in tasks):
        raise ConfigError(
            f"safety pairs come from answers BASE and ALIGNED generate, but {names!r} names no generation task",
            hint="e.g. harmful_refusal",
        )


def check_frontier_config(config: FrontierConfig) -> list:
    """What the config references, checked before any model loads: the tasks and the capability adapter."""
    from tether.config import check_value
    from tether.evals.registry import resolve_tasks
    from tether.models.spec import check_spec

    problems = check_value("tasks", lambda: resolve_tasks(config.tasks))
    if config.replay.fractions:
        problems += check_value("replay.tasks", lambda: resolve_tasks(config.replay.tasks))
    if config.retrain.steps and config.retrain.tasks:
        problems += check_value("retrain.tasks", lambda: resolve_tasks(config.retrain.tasks))
    if config.multi_objective.lambdas:
        for name in ("safety_tasks", "helpful_tasks"):
            value = getattr(config.multi_objective, name)
            if value:
                problems += check_value(f"multi_objective.{name}", lambda v=value: resolve_tasks(v))
        problems += check_value("multi_objective.safety_tasks", lambda: _has_generation_task(config))
    if config.capability_adapter:
        problems += check_value(
            "capability_adapter", lambda: check_spec(config.capability_adapter, where="capability_adapter")
        )
    if config.recovery.unmitigated:
        problems += check_value(
            "recovery.unmitigated",
            lambda: check_spec(config.recovery.unmitigated, where="recovery.unmitigated"),
        )
    return problems


__all__ = [
    "FrontierConfig",
    "InterpolationConfig",
    "MergeConfig",
    "MultiObjectiveConfig",
    "PerBlockConfig",
    "RecoveryConfig",
    "RetrainConfig",
    "ReplayConfig",
    "check_frontier_config",
]
