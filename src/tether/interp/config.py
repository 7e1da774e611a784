"""Configs of the interpretability commands (YAML + ``--set``): ``tether config show interp``."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from tether.config import EngineConfig, StrictModel

HARMFUL_SOURCES = ("harmbench_val", "advbench", "donotanswer")
HARMLESS_SOURCES = ("overrefusal", "boolq_questions")


class SplitConfig(StrictModel):
    """Harmful and harmless prompts cut into train (directions), validation (choice of layer and
    position) and test (every reported number) by a hash of the prompt id."""

    harmful_sources: list[str] = Field(
        default_factory=lambda: ["harmbench_val", "advbench"],
        min_length=1,
        description=f"Harmful prompt sources: any of {', '.join(HARMFUL_SOURCES)} (HarmBench's test split "
        "is the audit's and never used).",
    )
    harmless_sources: list[str] = Field(
        default_factory=lambda: ["overrefusal", "boolq_questions"],
        min_length=1,
        description=f"Harmless prompt sources: any of {', '.join(HARMLESS_SOURCES)}.",
    )
    n_train: int = Field(64, ge=2, description="Prompts per class that make the candidate directions.")
    n_val: int = Field(24, ge=2, description="Prompts per class that choose the layer and position.")
    n_test: int = Field(64, ge=1, description="Prompts per class behind every reported rate.")
    max_chars: int | None = Field(
        400, ge=20, description="Leave out prompts longer than this (keeps CPU forwards short)."
    )


class SelectionConfig(StrictModel):
    """How a candidate (layer, position) is chosen on the validation prompts (Arditi et al. 2024)."""

    max_layer_fraction: float = Field(
        0.8, gt=0.0, le=1.0, description="Only layers below this share of the depth are candidates."
    )
    kl_threshold: float = Field(
        0.1,
        gt=0.0,
        description="A candidate whose ablation moves harmless next-token KL past this is dropped.",
    )
    refusal_tokens: list[str] = Field(
        default_factory=lambda: ["I", "Sorry", "As", "Unfortunately"],
        min_length=1,
        description="Openings of refusals; the first token of each makes the refusal score (log-odds of "
        "their probability mass at the first answer token).",
    )


class RefusalDirectionConfig(StrictModel):
    """``tether interp refusal-direction MODEL…``: a refusal direction per model, chosen on held-out
    prompts, then ablated and added on test prompts no choice saw."""

    split: SplitConfig = Field(default_factory=SplitConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    capability_tasks: str = Field(
        "arc_easy,piqa,sciq",
        description="Audit tasks for the capability change under ablation (comma-separated).",
    )
    capability_limit: int = Field(
        50, ge=0, description="Items per capability task (0: skip the capability check)."
    )
    seed: int = Field(0, description="Sampling seed of the prompts, items and the random control direction.")
    batch_size: int = Field(16, ge=1, description="Prompts per forward pass when reading activations.")
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @model_validator(mode="after")
    def _known_sources(self) -> RefusalDirectionConfig:
        for field, known in (("harmful_sources", HARMFUL_SOURCES), ("harmless_sources", HARMLESS_SOURCES)):
            unknown = [s for s in getattr(self.split, field) if s not in known]
            if unknown:
                raise ValueError(
                    f"split.{field}: unknown source {unknown[0]!r}; use any of {', '.join(known)}"
                )
        return self


class TraceConfig(StrictModel):
    """``tether interp trace``: ROME-style causal tracing (Meng et al. 2022)."""

    noise: float = Field(
        3.0,
        gt=0.0,
        description="Noise on the subject tokens' embeddings, in multiples of the embeddings' std.",
    )
    samples: int = Field(5, ge=1, description="Noisy copies per prompt (the corrupted runs are averaged).")
    window: int = Field(10, ge=1, description="Layers restored together for the MLP and attention traces.")
    seed: int = Field(0, description="Seed of the noise.")
    batch_size: int = Field(
        64, ge=1, description="Restored runs per forward pass (one per (layer, token) × noisy copy)."
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)


PATCH_DIRECTIONS = ("harmful_to_harmless", "harmless_to_harmful")


class PatchConfig(StrictModel):
    """``tether interp patch MODEL…``: activation patching of the residual stream between harmful
    and harmless runs, one (layer, post-instruction position) at a time."""

    split: SplitConfig = Field(default_factory=SplitConfig)
    pairs: int | None = Field(
        None,
        ge=1,
        description="(harmful, harmless) pairs from the train split, at most split.n_train (default: all "
        "of it); the cells' bootstrap CIs are over them.",
    )
    directions: list[str] = Field(
        default_factory=lambda: list(PATCH_DIRECTIONS),
        min_length=1,
        description="harmful_to_harmless: the harmful run's state patched into the harmless run (is the "
        "state sufficient for refusal?); harmless_to_harmful: the reverse (is it necessary?).",
    )
    refusal_tokens: list[str] = Field(
        default_factory=lambda: ["I", "Sorry", "As", "Unfortunately"],
        min_length=1,
        description="Openings of refusals; the metric is the refusal score (log-odds of their first "
        "tokens' probability mass at the first answer token), as in refusal-direction.",
    )
    bootstrap: int = Field(1000, ge=100, description="Bootstrap resamples of the pairs for each cell's CI.")
    seed: int = Field(0, description="Sampling seed of the prompts and the bootstrap.")
    batch_size: int = Field(32, ge=1, description="Patched runs per forward pass.")
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @field_validator("directions")
    @classmethod
    def _known_directions(cls, value: list[str]) -> list[str]:
        unknown = [d for d in value if d not in PATCH_DIRECTIONS]
        if unknown:
            raise ValueError(f"unknown {unknown[0]!r}; use any of {', '.join(PATCH_DIRECTIONS)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> PatchConfig:
        for field, known in (("harmful_sources", HARMFUL_SOURCES), ("harmless_sources", HARMLESS_SOURCES)):
            bad = [s for s in getattr(self.split, field) if s not in known]
            if bad:
                raise ValueError(f"split.{field}: unknown source {bad[0]!r}; use any of {', '.join(known)}")
        return self


def check_patch_config(config: PatchConfig) -> list:
    """Fields that depend on each other, reported at the field a user set (``--set pairs=...``)."""
    from tether.config import check_value
    from tether.errors import ConfigError

    def pairs_fit() -> None:
        if config.pairs is not None and config.pairs > config.split.n_train:
            raise ConfigError(
                f"{config.pairs} pairs need split.n_train >= {config.pairs} (it is {config.split.n_train})"
            )

    return check_value("pairs", pairs_fit)


class RewardAttributionConfig(StrictModel):
    """``tether interp reward RUN_DIR``: reward-model attribution and reward features."""

    top: int = Field(5, ge=1, description="Summaries attributed at each end (highest and lowest reward).")
    bootstrap: int = Field(1000, ge=100, description="Bootstrap resamples of the summaries for each CI.")
    seed: int = Field(0, description="Seed of the bootstrap.")
    batch_size: int = Field(8, ge=1, description="Summaries per reward-model forward pass.")
    engine: EngineConfig = Field(default_factory=EngineConfig)


def check_direction_config(config) -> list:
    """The capability tasks the config names, before any model loads."""
    from tether.config import check_value
    from tether.evals.registry import resolve_tasks

    if not config.capability_limit:
        return []
    return check_value("capability_tasks", lambda: resolve_tasks(config.capability_tasks))


__all__ = [
    "PATCH_DIRECTIONS",
    "PatchConfig",
    "RefusalDirectionConfig",
    "RewardAttributionConfig",
    "check_direction_config",
    "check_patch_config",
    "SelectionConfig",
    "SplitConfig",
    "TraceConfig",
]
