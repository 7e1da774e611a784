"""Records of the labeling app: candidate sets in, votes in the DB, preference pairs out
(``PreferencePair`` lives in ``tether.data.records``: reward modeling and DPO read it too).

Canonical input (one JSON object per line, one line per document)::

    {"doc_id": "d1", "document": "...", "candidates": [{"id": "a", "text": "..."}, {"id": "b", "text": "..."}]}

Extra keys on a set or a candidate (model name, sampling seed, ...) are kept and exported unchanged.
An optional ``prompt`` on a set is the exact prompt the candidates were generated from; when absent,
exported pairs use ``summarization_prompt(document)``.

A nested set may also carry labels made outside the page (a team labelling a committed set, another
tool's votes), which ``tether label import`` stores as that annotator's votes::

    {"doc_id": "d1", ..., "votes": [{"annotator": "team", "ranking": ["b", "a"], "reason": "unfaithful"}]}

A tie is ``{"annotator": ..., "ranking": [], "reason": "both_fine"}``, as on the page.

A flat file, one candidate per line ``{"doc_id", "document", "candidate_id", "text"}``, is also read:
lines are grouped by ``doc_id`` in first-seen order and must agree on ``document``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tether.data.jsonl import describe_validation_error, iter_jsonl, iter_numbered
from tether.data.records import PreferencePair as PreferencePair  # re-exported: the app's output
from tether.errors import DataError

SUMMARIZE_INSTRUCTION = (
    "Summarize the following text in a few sentences, keeping its key points and adding nothing."
)
"""The instruction every summarization prompt in Tether starts with (generation, labeling, reward, PPO)."""

MIN_CANDIDATES = 2
MAX_CANDIDATES = 4  # the page shows candidates side by side; more than four stops being readable

Reason = Literal["unfaithful", "omits_key_point", "both_fine", "other"]
REASONS: tuple[str, ...] = get_args(Reason)
TIE_REASON = "both_fine"
"""A vote with this reason is a tie: it carries no ranking and yields no preference pair."""


def summarization_prompt(document: str) -> str:
    """The prompt a policy sees for ``document``: the instruction, a blank line, the document."""
    return f"{SUMMARIZE_INSTRUCTION}\n\n{document}"


class Candidate(BaseModel):
    """One candidate summary; extra keys (model, seed, ...) are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, description="unique within its set; votes name candidates by this id")
    text: str = Field(description="the summary shown to annotators (always rendered escaped)")

    @field_validator("id")
    @classmethod
    def _no_comma(cls, value: str) -> str:
        # The vote form sends a ranking as comma-separated ids.
        if "," in value:
            raise ValueError(f"candidate id {value!r} contains a comma; use ids without commas")
        return value


class CandidateSet(BaseModel):
    """One document with 2-4 candidate summaries: the unit an annotator labels."""

    model_config = ConfigDict(extra="allow", frozen=True)

    doc_id: str = Field(min_length=1, description="stable id; importing the same doc_id twice is a no-op")
    document: str = Field(description="the text that was summarized")
    candidates: list[Candidate] = Field(min_length=MIN_CANDIDATES, max_length=MAX_CANDIDATES)
    prompt: str | None = Field(
        default=None, description="exact generation prompt; defaults to summarization_prompt(document)"
    )

    @field_validator("candidates")
    @classmethod
    def _unique_ids(cls, candidates: list[Candidate]) -> list[Candidate]:
        ids = [c.id for c in candidates]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"candidate ids must be unique within a set; repeated: {dupes}")
        return candidates

    @property
    def export_prompt(self) -> str:
        return self.prompt if self.prompt is not None else summarization_prompt(self.document)

    def candidate(self, cand_id: str) -> Candidate:
        for c in self.candidates:
            if c.id == cand_id:
                return c
        raise KeyError(cand_id)

    def position(self, cand_id: str) -> int:
        """0-based index of a candidate in the imported order (stable, unlike the shuffled display)."""
        return [c.id for c in self.candidates].index(cand_id)


class ImportedVote(BaseModel):
    """One vote carried in an import file: who, the ranking best first (empty for a tie), why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    annotator: str = Field(min_length=1)
    ranking: list[str]
    reason: Reason


@dataclass(frozen=True)
class LabelledSet:
    """A candidate set from an import file with the votes it carried and where it was read."""

    record: CandidateSet
    votes: tuple[ImportedVote, ...]
    where: str


class FlatCandidate(BaseModel):
    """One line of the flat input format; grouped into CandidateSets by doc_id."""

    model_config = ConfigDict(extra="allow")

    doc_id: str = Field(min_length=1)
    document: str
    candidate_id: str = Field(min_length=1)
    text: str
    prompt: str | None = None


@dataclass(frozen=True)
class Vote:
    """One annotator's judgement of one item, as stored.

    ``ranking`` lists every candidate id best first; it is empty for a tie (reason ``both_fine``).
    """

    doc_id: str
    annotator: str
    ranking: tuple[str, ...]
    reason: str
    created_at: str

    @property
    def tie(self) -> bool:
        return self.reason == TIE_REASON

    @property
    def best(self) -> str | None:
        return None if self.tie else self.ranking[0]


def load_candidate_sets(path: str | Path) -> list[CandidateSet]:
    """Read candidate sets from JSONL, in the canonical (nested) or the flat format.

    The format is decided by the first record: a ``candidates`` key means nested.
    """
    return [labelled.record for labelled in load_labelled_sets(path)]


def load_labelled_sets(path: str | Path) -> list[LabelledSet]:
    """Candidate sets with the votes they carry (nested format only; flat lines carry none).

    A vote that names an unknown candidate, leaves one out, repeats an annotator on the same set, or
    ranks candidates under the tie reason is a DataError naming file:line."""
    path = Path(path)
    first = next(iter_jsonl(path), None)
    if first is None:
        raise DataError("file has no records", where=str(path), hint="add one JSON object per line")
    if isinstance(first, dict) and "candidates" in first:
        labelled = [_nested_set(f"{path}:{lineno}", raw) for lineno, raw in iter_numbered(path)]
    else:
        labelled = [LabelledSet(s, (), str(path)) for s in _group_flat(path, iter_jsonl(path, FlatCandidate))]
    seen: set[str] = set()
    for item in labelled:
        if item.record.doc_id in seen:
            raise DataError(
                f"doc_id '{item.record.doc_id}' appears on more than one line",
                where=item.where,
                hint="put all candidates of a document in one record, or give each document its own doc_id",
            )
        seen.add(item.record.doc_id)
    return labelled


def _nested_set(where: str, raw: Any) -> LabelledSet:
    if not isinstance(raw, dict):
        raise DataError("expected a JSON object", where=where, hint="one candidate set per line")
    raw = dict(raw)
    raw_votes = raw.pop("votes", [])
    try:
        record = CandidateSet.model_validate(raw)
        if not isinstance(raw_votes, list):
            raise DataError("field 'votes': expected a list of votes", where=where, hint="fix the line")
        votes = tuple(ImportedVote.model_validate(v) for v in raw_votes)
    except ValidationError as exc:
        raise DataError(describe_validation_error(exc), where=where, hint="fix the line") from None
    ids = sorted(c.id for c in record.candidates)
    annotators: set[str] = set()
    for vote in votes:
        if vote.annotator in annotators:
            raise DataError(
                f"annotator '{vote.annotator}' votes twice on doc_id '{record.doc_id}'",
                where=where,
                hint="keep one vote per annotator and set",
            )
        annotators.add(vote.annotator)
        if vote.reason == TIE_REASON and vote.ranking:
            raise DataError(
                f"a '{TIE_REASON}' vote by '{vote.annotator}' carries a ranking",
                where=where,
                hint="a tie has an empty ranking",
            )
        if vote.reason != TIE_REASON and sorted(vote.ranking) != ids:
            raise DataError(
                f"the vote by '{vote.annotator}' must rank each candidate exactly once; got {vote.ranking}",
                where=where,
                hint=f"candidate ids: {ids}",
            )
    return LabelledSet(record, votes, where)


def _group_flat(path: Path, rows: Iterable[FlatCandidate]) -> list[CandidateSet]:
    groups: dict[str, list[FlatCandidate]] = {}
    for row in rows:
        group = groups.setdefault(row.doc_id, [])
        if group and (row.document != group[0].document or row.prompt != group[0].prompt):
            raise DataError(
                f"doc_id '{row.doc_id}': candidate '{row.candidate_id}' has a different document or prompt "
                "than the first line of that doc_id",
                where=str(path),
                hint="lines of one doc_id must repeat the same document (and prompt)",
            )
        group.append(row)
    sets = []
    for doc_id, group in groups.items():
        candidates = [
            {"id": r.candidate_id, "text": r.text, **(r.model_extra or {})}
            for r in group  # extra keys of a flat line belong to its candidate
        ]
        try:
            sets.append(
                CandidateSet(
                    doc_id=doc_id, document=group[0].document, prompt=group[0].prompt, candidates=candidates
                )
            )
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise DataError(
                f"doc_id '{doc_id}': {problems}",
                where=str(path),
                hint=f"each document needs {MIN_CANDIDATES}-{MAX_CANDIDATES} candidates with distinct candidate_id",
            ) from None
    return sets
