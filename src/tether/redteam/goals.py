"""Campaign goals: HarmBench validation behaviours, by category, never the audit's test prompts.

The audit's ``harmful_refusal`` task scores HarmBench's *test* split; goals come from the
*validation* split, and any goal whose text matches an audit item is dropped (there are none today;
the check keeps it so if either file changes). Note that the audit's ``jailbreak`` task wraps these
same validation behaviours in static templates; ``redteam_replay`` holds out its own half by hash.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from tether.data.sources import load_source, stratified_sample
from tether.errors import ConfigError
from tether.redteam.config import GoalsConfig


class Goal(BaseModel):
    """One behaviour to elicit."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    category: str
    source: str


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def audit_texts() -> set[str]:
    """The normalised request texts of the audit's harmful-refusal items (HarmBench test split)."""
    return {_norm(p.text) for p in load_source("harmbench")}


def select_goals(config: GoalsConfig, seed: int) -> tuple[list[Goal], dict]:
    """The goals of a campaign and how they were chosen. An empty selection is a ConfigError
    naming ``goals``."""
    records = load_source(config.source)
    known = sorted({r.category for r in records})
    if config.categories is not None:
        unknown = [c for c in config.categories if c not in known]
        if unknown:
            raise ConfigError(
                f"unknown goal categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}",
                where="goals.categories",
                hint=f"{config.source} has: {', '.join(known)}",
            )
    kept = [
        r
        for r in records
        if (config.categories is None or r.category in config.categories)
        and r.category not in config.exclude_categories
        and (config.max_chars is None or len(r.text) <= config.max_chars)
    ]
    reserved = audit_texts()
    overlap = [r.id for r in kept if _norm(r.text) in reserved]
    kept = [r for r in kept if r.id not in overlap]
    chosen = stratified_sample(kept, per_category=config.per_category, limit=config.limit, seed=seed)
    if not chosen:
        raise ConfigError(
            "the goal set is empty",
            where="goals",
            hint="widen goals.categories, goals.exclude_categories, goals.max_chars or goals.limit",
        )
    goals = [Goal(id=r.id, text=r.text, category=r.category, source=r.source) for r in chosen]
    info = {
        "source": config.source,
        "goals": len(goals),
        "by_category": {c: sum(g.category == c for g in goals) for c in sorted({g.category for g in goals})},
        "dropped_audit_overlap": len(overlap),
    }
    return goals, info
