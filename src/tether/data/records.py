"""Typed records for the datasets Tether ships loaders for (see ``tether.data.sources``).

Every record is frozen and carries ``id`` (stable across runs), ``category`` (the field reports
break results down by) and ``source`` (the registry name of the dataset it came from), so a
result can always be traced back to one upstream row.

``PreferencePair`` is the one record here that no loader yields: stages exchange it (the labeling
app and the AI labeler write it; reward modeling and DPO read it), and it lives here, below both.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_FROZEN = ConfigDict(frozen=True)


class HarmfulPrompt(BaseModel):
    """A request a well-aligned model should refuse. ``category`` is the dataset's harm category;
    ``tags`` keeps the finer upstream labels (HarmBench functional category and tags, AdvBench
    sub-harms, Do-Not-Answer intent codes)."""

    model_config = _FROZEN

    id: str
    text: str
    category: str
    source: str
    tags: list[str] = Field(default_factory=list)


class BenignPrompt(BaseModel):
    """A benign request that merely sounds edgy (over-refusal probe); ``category`` is its domain."""

    model_config = _FROZEN

    id: str
    text: str
    category: str
    source: str
    expected_topic: str = ""


class MCItem(BaseModel):
    """A multiple-choice question. ``question`` is the question text (for HellaSwag: the raw
    ``ctx``); ``choices`` are the raw upstream answer texts, before any prompt formatting.
    ``extra`` keeps raw upstream fields a prompt format needs (HellaSwag's ``activity_label``,
    ``ctx_a``, ``ctx_b``)."""

    model_config = _FROZEN

    id: str
    question: str
    choices: list[str] = Field(min_length=2)
    answer_index: int = Field(ge=0)
    category: str
    source: str
    extra: dict[str, str] = Field(default_factory=dict)


class CodeProblem(BaseModel):
    """A function-completion problem checked by executing ``test`` against ``entry_point``."""

    model_config = _FROZEN

    id: str
    prompt: str
    test: str
    entry_point: str
    category: str
    source: str = "humaneval"
    canonical_solution: str = ""


class BBQItem(BaseModel):
    """One BBQ question (Parrish et al. 2022). ``answer_index`` is the correct answer,
    ``unknown_index`` the "can't be determined" option, ``biased_index`` the answer that follows
    the social stereotype (None where the dataset does not say). In an ambiguous context the
    correct answer is always the unknown one; in a disambiguated context it never is."""

    model_config = _FROZEN

    id: str
    context: str
    question: str
    choices: list[str] = Field(min_length=3, max_length=3)
    answer_index: int = Field(ge=0, le=2)
    unknown_index: int = Field(ge=0, le=2)
    biased_index: int | None = Field(default=None, ge=0, le=2)
    context_condition: Literal["ambig", "disambig"]
    category: str
    source: str
    polarity: Literal["neg", "nonneg", ""] = ""


PROMPT_SLOT = "{prompt}"
MODEL_NAME_SLOT = "{model_name}"
DEFAULT_MODEL_NAME = "ChatGPT"  # the name most of these community prompts were written against
_SLOTS = re.compile(re.escape(PROMPT_SLOT) + "|" + re.escape(MODEL_NAME_SLOT))


def fill_template(template: str, prompt: str, model_name: str = DEFAULT_MODEL_NAME) -> str:
    """Put ``prompt`` (and the model's name) into a jailbreak template.

    One regex pass with a function replacement: unlike ``str.format`` it ignores the many other
    braces these templates contain, and a prompt that itself contains ``{model_name}`` or
    backslashes is inserted verbatim rather than expanded.
    """
    values = {PROMPT_SLOT: prompt, MODEL_NAME_SLOT: model_name}
    return _SLOTS.sub(lambda m: values[m.group(0)], template)


class JailbreakTemplate(BaseModel):
    """A jailbreak wrapper. ``template`` contains ``{prompt}`` where the request goes (and may
    contain ``{model_name}``); fill it with :meth:`fill`, never with ``str.format``.
    ``family`` groups variants of one attack (e.g. all DAN versions); ``source`` is the dataset."""

    model_config = _FROZEN

    id: str
    family: str
    template: str
    source: str
    name: str = ""

    @property
    def category(self) -> str:
        """The family, so templates can be stratified and reported like any other record."""
        return self.family

    def fill(self, prompt: str, model_name: str = DEFAULT_MODEL_NAME) -> str:
        return fill_template(self.template, prompt, model_name)


class ToxicityPrompt(BaseModel):
    """A prompt prefix likely to elicit toxic continuations; ``category`` is the toxicity kind."""

    model_config = _FROZEN

    id: str
    text: str
    category: str
    source: str = "realtoxicityprompts"


class LabeledRefusal(BaseModel):
    """A model response with a human label saying whether it is a refusal of ``prompt``."""

    model_config = _FROZEN

    id: str
    text: str
    is_refusal: bool
    prompt: str = ""
    category: str = ""
    source: str = ""


class Document(BaseModel):
    """A passage with a question about it (BoolQ); the passage is ``text``."""

    model_config = _FROZEN

    id: str
    text: str
    question: str
    answer: bool
    category: str
    source: str


class ArithmeticItem(BaseModel):
    """A math word problem or arithmetic question with its final answer as a string.
    ``solution`` holds the worked solution where the dataset has one (GSM8K)."""

    model_config = _FROZEN

    id: str
    question: str
    answer: str
    category: str
    source: str
    solution: str = ""


# --- records that stages exchange -------------------------------------------------------------


class PreferencePair(BaseModel):
    """A TRL-style preference pair (prompt/chosen/rejected) with where it came from: written by the
    labeling app's export and the AI labeler, read by reward modeling and DPO. ``doc_id`` names
    the item (its document), ``annotator`` who judged it, ``reason`` why ``chosen`` won.

    ``votes_for``/``votes_total`` are set only by majority aggregation: how many votes preferred
    ``chosen`` over ``rejected``, out of all votes on the item (ties included).
    """

    model_config = _FROZEN

    prompt: str
    chosen: str
    rejected: str
    doc_id: str
    annotator: str
    reason: str
    chosen_id: str
    rejected_id: str
    votes_for: int | None = None
    votes_total: int | None = None


class ChatTurn(BaseModel):
    """One earlier message of a multi-turn conversation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["user", "assistant"]
    content: str


class FoundAttack(BaseModel):
    """A successful red-team attack (``tether redteam export``): the message that got harmful
    content out of the target, after ``history`` (earlier turns, for multi-turn attacks), the
    goal it elicited, and the side of the hash split by goal it falls on. CAI trains on the
    ``train`` side (``prompts.extra_redteam``); the audit's ``redteam_replay`` task replays the
    ``heldout`` side, so no goal is both trained on and replayed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    goal_id: str
    goal: str
    category: str
    strategy: str
    prompt: str = Field(min_length=1)
    history: list[ChatTurn] = Field(default_factory=list)
    response: str
    judge_score: float | None = None
    target: str
    # The campaign's reply length (``target_max_new_tokens``): a replay cut shorter shows the judge
    # less of the reply than the campaign's judge saw. None in exports written before it was recorded.
    max_new_tokens: int | None = Field(None, ge=1)
    split: Literal["train", "heldout"]
    source: str = "redteam"


__all__ = [
    "DEFAULT_MODEL_NAME",
    "ChatTurn",
    "FoundAttack",
    "ArithmeticItem",
    "BBQItem",
    "BenignPrompt",
    "CodeProblem",
    "Document",
    "HarmfulPrompt",
    "JailbreakTemplate",
    "LabeledRefusal",
    "MCItem",
    "PreferencePair",
    "ToxicityPrompt",
    "fill_template",
]
