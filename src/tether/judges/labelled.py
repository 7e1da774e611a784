"""The team's labelled set of real model outputs (``data/judges/labelled.jsonl``), read and checked.

Every item is a (prompt, response) a real model wrote, labelled by a person reading it, following
``data/judges/GUIDE.md``, on three axes: ``refused`` (refusal / compliance / partial),
``harmful_content`` (yes / no, HarmBench's attack success) and ``degenerate`` (yes / no, with a
kind). ``split`` comes from a hash of the id: judges are written and fit on ``build`` only and
validated on ``test``.

A malformed file (a missing or unknown label, a duplicate id, a split that does not match the id's
hash) is a DataError naming ``file:line``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tether.data.jsonl import iter_numbered
from tether.errors import DataError
from tether.judges.degenerate import DegenerateKind

Split = Literal["build", "test"]
# In a source checkout the set sits at the repository root; an installed package has only the
# calibration sheet computed from it (tether/assets/judges/validation.json).
LABELLED_PATH = Path(__file__).resolve().parents[3] / "data" / "judges" / "labelled.jsonl"


def split_of(item_id: str) -> Split:
    """``build`` when the first byte of sha256(id) is even, else ``test`` (about 50/50)."""
    return "build" if hashlib.sha256(item_id.encode("utf-8")).digest()[0] % 2 == 0 else "test"


class LabelledItem(BaseModel):
    """One labelled (prompt, response). The generation fields say how the response was made; the
    label fields are a person's reading of it (GUIDE.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    source: str = Field(min_length=1, description="dataset the prompt came from (harmbench, overrefusal, …)")
    source_id: str = ""
    prompt_kind: Literal["harmful", "edgy", "benign"]
    prompt: str = Field(min_length=1, description="the request the labels are about")
    model_input: str | None = Field(None, description="what the model saw, when not the prompt (a jailbreak)")
    response: str
    model: str = Field(min_length=1)
    system: str | None = None
    raw_template: str | None = None
    sampling: dict[str, Any]
    finish_reason: str = ""
    generation_notes: str = ""
    refused: Literal["refusal", "compliance", "partial"]
    harmful_content: Literal["yes", "no"]
    degenerate: Literal["yes", "no"]
    degenerate_kind: DegenerateKind | None = None
    split: Split
    note: str = ""

    @model_validator(mode="after")
    def _kind_goes_with_degenerate(self) -> LabelledItem:
        if self.degenerate == "yes" and self.degenerate_kind is None:
            raise ValueError("degenerate is 'yes' but degenerate_kind is missing")
        if self.degenerate == "no" and self.degenerate_kind is not None:
            raise ValueError(f"degenerate is 'no' but degenerate_kind is {self.degenerate_kind!r}")
        return self

    @property
    def is_refusal(self) -> bool:
        """Binary refusal: ``partial`` did not decline the task, so it counts as compliance."""
        return self.refused == "refusal"

    @property
    def is_harmful(self) -> bool:
        return self.harmful_content == "yes"

    @property
    def is_degenerate(self) -> bool:
        return self.degenerate == "yes"


def read_labelled(path: str | Path = LABELLED_PATH, *, split: Split | None = None) -> list[LabelledItem]:
    """Every item of a labelled set (or those of one ``split``), checked line by line."""
    path = Path(path)
    items: list[LabelledItem] = []
    seen: dict[str, int] = {}
    for lineno, item in iter_numbered(
        path,
        LabelledItem,
        hint="every item needs refused, harmful_content, degenerate (and degenerate_kind when yes); see data/judges/GUIDE.md",
        missing_hint="the labelled set is in a source checkout of Tether, under data/judges/",
    ):
        where = f"{path}:{lineno}"
        if item.id in seen:
            raise DataError(f"duplicate id {item.id!r} (first on line {seen[item.id]})", where=where)
        seen[item.id] = lineno
        if item.split != split_of(item.id):
            raise DataError(
                f"split is {item.split!r} but the id's hash puts it in {split_of(item.id)!r}",
                where=where,
                hint="splits come from tether.judges.labelled.split_of(id); never move an item by hand",
            )
        items.append(item)
    if not items:
        raise DataError("the labelled set has no items", where=str(path))
    return [it for it in items if split is None or it.split == split]


def composition(items: Sequence[LabelledItem]) -> dict[str, dict[str, int]]:
    """Counts by source, model, prompt kind, split and each label: the set's composition table."""
    table: dict[str, dict[str, int]] = {}
    for field in ("split", "source", "model", "prompt_kind", "refused", "harmful_content", "degenerate"):
        counts: dict[str, int] = {}
        for it in items:
            key = str(getattr(it, field))
            counts[key] = counts.get(key, 0) + 1
        table[field] = dict(sorted(counts.items()))
    kinds: dict[str, int] = {}
    for it in items:
        if it.degenerate_kind:
            kinds[it.degenerate_kind] = kinds.get(it.degenerate_kind, 0) + 1
    table["degenerate_kind"] = dict(sorted(kinds.items()))
    return table


__all__ = ["LABELLED_PATH", "LabelledItem", "Split", "composition", "read_labelled", "split_of"]
