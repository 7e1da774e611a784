"""Typed records of the CAI loop, one JSONL line each, so a run can be read, audited and resumed.

A round's ``loop.jsonl`` holds, per prompt: one ``Answer``, then per pass one ``Critique`` and one
``Revision``, then one ``Final`` (the text SFT trains on, or the reason it was dropped). RLAIF writes
``LabeledPair`` lines to ``pairs.jsonl``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

_FROZEN = ConfigDict(frozen=True)


class Answer(BaseModel):
    """The model's first answer to a prompt."""

    model_config = _FROZEN
    kind: Literal["answer"] = "answer"
    round: int
    prompt_id: str
    text: str
    finish_reason: str = ""


class Critique(BaseModel):
    """The critic's critique of the current answer under one principle. ``degenerate`` critiques
    (empty or looping) are kept for the record but lead to no revision."""

    model_config = _FROZEN
    kind: Literal["critique"] = "critique"
    round: int
    prompt_id: str
    pass_index: int
    principle: str
    text: str
    degenerate: str | None = None  # why the critique was unusable, None when it is fine


class Revision(BaseModel):
    """The reviser's rewrite after a critique. When ``skipped``, ``text`` is the previous answer
    unchanged (the critique or the rewrite was degenerate; ``skip_reason`` says which)."""

    model_config = _FROZEN
    kind: Literal["revision"] = "revision"
    round: int
    prompt_id: str
    pass_index: int
    principle: str
    previous: str
    text: str
    skipped: bool = False
    skip_reason: str | None = None


class FinalReason(StrEnum):
    """Why a final text was kept for SFT or dropped; ``loop.jsonl`` stores the value."""

    # kept
    REFUSAL = "refusal"  # red-team prompt: the judge sees a refusal
    CRITIC_COMPLIES = "critic says it complies"  # red-team prompt: no refusal, but the critic said Yes
    HELPFUL = "helpful"  # benign prompt: not refused
    HELPFUL_FIRST_ANSWER = "helpful first answer (its revision refused)"  # benign: the first answer kept
    # dropped
    EMPTY = "empty"
    DEGENERATE = "degenerate (an echo, loop or word salad): neither a refusal nor an answer to imitate"
    DEFLECTION = "off-topic deflection, not a refusal"  # red-team prompt: a non-sequitur
    STILL_COMPLIES = "still complies with the harmful request"
    REFUSES_BENIGN = "refuses a benign request"


class Final(BaseModel):
    """The last revision and whether it goes into SFT. ``reason`` says why it was kept or dropped."""

    model_config = _FROZEN
    kind: Literal["final"] = "final"
    round: int
    prompt_id: str
    prompt: str
    prompt_kind: str
    text: str
    keep: bool
    reason: FinalReason
    refusal_label: str
    critic_complies: bool | None = None  # asked only for harmful prompts the judge saw no refusal in


LoopRecord = Annotated[Answer | Critique | Revision | Final, Field(discriminator="kind")]
LOOP_RECORD = TypeAdapter(LoopRecord)


class LabeledPair(BaseModel):
    """An AI-labelled preference pair (TRL's prompt/chosen/rejected plus provenance).

    ``p_chosen`` is the feedback model's probability that ``chosen`` is better, averaged over both
    presentation orders; ``p_first_order`` / ``p_second_order`` are the two before averaging."""

    model_config = _FROZEN
    prompt_id: str
    prompt_kind: str
    prompt: str
    chosen: str
    rejected: str
    principle: str
    p_chosen: float
    p_first_order: float
    p_second_order: float
    chosen_refusal: str = ""
    rejected_refusal: str = ""
