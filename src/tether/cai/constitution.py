"""A constitution: the principles a model critiques and revises its answers against.

Each principle follows the pattern of Bai et al. 2022 (Constitutional AI, Appendix C): a
``critique_request`` ("Identify specific ways in which the assistant's last response is harmful…")
and a ``revision_request`` ("Please rewrite the assistant response to remove…"), plus an optional
``comparison`` question for AI feedback ("Which response is less harmful?"), ``tags`` and few-shot
``examples``.

Tags steer sampling: a principle tagged ``harmful`` is only drawn for red-team prompts and one tagged
``benign`` only for benign prompts; an untagged principle (or one with both tags) applies to both.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import yaml
from pydantic import Field, field_validator

from tether.config import StrictModel, load_config
from tether.errors import ConfigError
from tether.inputs import check_input_file, did_you_mean

PROMPT_KINDS = ("harmful", "benign")


class PrincipleExample(StrictModel):
    """A worked critique → revision, shown to the critic and reviser before the real case."""

    prompt: str = Field(min_length=1, description="The user's request.")
    response: str = Field(min_length=1, description="A first answer that breaks the principle.")
    critique: str = Field(min_length=1, description="The critique of that answer.")
    revision: str = Field(min_length=1, description="The answer rewritten to follow the principle.")


class Principle(StrictModel):
    """One principle of the constitution."""

    name: str = Field(min_length=1, description="Unique short name (shown in records and reports).")
    critique_request: str = Field(min_length=1, description="Asks the critic what is wrong with an answer.")
    revision_request: str = Field(min_length=1, description="Asks the reviser to rewrite the answer.")
    comparison: str | None = Field(
        None, description="Question for AI feedback between two answers; default built from the name."
    )
    tags: list[str] = Field(
        default_factory=list, description="'harmful' / 'benign' restrict where it applies."
    )
    examples: list[PrincipleExample] = Field(default_factory=list, description="Few-shot demonstrations.")
    revision_prefix: str | None = Field(
        None,
        description="Words the revision starts with (prefilled; the reviser writes the rest). Keeps a "
        "small reviser on the principle's course, e.g. \"I'm sorry, but I can't help with\".",
    )

    @field_validator("tags")
    @classmethod
    def _no_misspelt_kind(cls, tags: list[str]) -> list[str]:
        # A misspelt 'harmful' would silently make the principle apply to every prompt.
        for tag in tags:
            close = did_you_mean(tag, PROMPT_KINDS) if tag not in PROMPT_KINDS else None
            if close:
                raise ValueError(
                    f"unknown tag '{tag}': {close} (only 'harmful' and 'benign' choose where a principle applies)"
                )
        return tags

    def applies_to(self, kind: str) -> bool:
        kinds = [t for t in self.tags if t in PROMPT_KINDS]
        return not kinds or kind in kinds

    @property
    def comparison_question(self) -> str:
        return (
            self.comparison
            or f"Which of these assistant responses better follows the principle '{self.name}'?"
        )


class Constitution(StrictModel):
    """The principles, in file order."""

    principles: list[Principle] = Field(description="At least one principle.")
    description: str = Field("", description="Free text: what this constitution is for.")

    @field_validator("principles")
    @classmethod
    def _non_empty_unique(cls, principles: list[Principle]) -> list[Principle]:
        if not principles:
            raise ValueError(
                "the constitution has no principles; add at least one with name, critique_request and revision_request"
            )
        names = [p.name for p in principles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"principle names must be unique; repeated: {dupes}")
        return principles

    def for_kind(self, kind: str) -> list[Principle]:
        """Principles that apply to a prompt kind; all of them if none is specific to it."""
        chosen = [p for p in self.principles if p.applies_to(kind)]
        return chosen or list(self.principles)

    def get(self, name: str) -> Principle:
        for p in self.principles:
            if p.name == name:
                return p
        raise KeyError(name)

    def examples_for(
        self, principle: Principle, kind: str, n: int, key: str, *, pool: bool = True
    ) -> list[tuple[Principle, PrincipleExample]]:
        """Up to ``n`` worked examples for a critique or revision under ``principle``: its own first,
        then (with ``pool``) other principles' examples that apply to the same prompt kind, in an
        order drawn by hash of ``key``. Varying the borrowed examples per prompt keeps a small
        reviser from copying one fixed demonstration word for word; keeping them to the same kind
        keeps refusal demonstrations away from benign prompts."""
        chosen = [(principle, ex) for ex in principle.examples][:n]
        if pool and len(chosen) < n:
            others = [(p, ex) for p in self.for_kind(kind) if p.name != principle.name for ex in p.examples]
            others.sort(key=lambda pe: hashlib.sha256(f"{key}/{pe[0].name}/{pe[1].prompt}".encode()).digest())
            chosen += others[: n - len(chosen)]
        return chosen

    def sample(self, kind: str, key: str, seed: int) -> Principle:
        """A principle for ``key`` (e.g. "prompt-id/pass-2"), chosen by hash: the same seed and key
        always give the same principle, in any process, whatever else is being sampled."""
        pool = self.for_kind(kind)
        digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
        return pool[int.from_bytes(digest[:8], "big") % len(pool)]


_PRINCIPLE_LOC = re.compile(r"\bprinciples\.(\d+)")


def _name_principles(message: str, path: Path) -> str:
    """Put each principle's name beside its index ("principles.1 ('privacy')") in error messages."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        items = raw.get("principles") or [] if isinstance(raw, dict) else []
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return message

    def label(match: re.Match) -> str:
        index = int(match.group(1))
        item = items[index] if index < len(items) else None
        name = item.get("name") if isinstance(item, dict) else None
        return f"principles.{index} ('{name}')" if name else f"principles.{index} (unnamed)"

    return _PRINCIPLE_LOC.sub(label, message)


def load_constitution(path: str | Path) -> Constitution:
    """Read and validate a constitution YAML; every problem is reported at once, each with
    file:line, the principle (index and name) and the field."""
    path = Path(path)
    check_input_file(
        path,
        what="constitution",
        error=ConfigError,
        hint="pass a constitution YAML, or 'builtin' for the shipped one",
    )
    try:
        return load_config(Constitution, path)
    except ConfigError as exc:
        if "in the config" not in exc.message:  # not YAML, not UTF-8, not a mapping: as it was said
            raise
        raise ConfigError(
            _name_principles(exc.message, path).replace("in the config", "in the constitution"),
            where=exc.where,
            hint="each principle needs name, critique_request and revision_request; "
            "see configs/constitution.yaml for an example",
        ) from None
