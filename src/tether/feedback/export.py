"""Votes to preference pairs in TRL's prompt/chosen/rejected format.

A ranking of k candidates expands to all k(k-1)/2 ordered pairs (each better one chosen over each
worse one). A tie ("both fine") yields no pair: it says neither is preferred, and a DPO or reward
loss has no way to learn "equal" from a chosen/rejected pair. Ties are counted in the summary.

``majority`` aggregation merges all votes on an item per candidate pair: the pair is kept, once,
when strictly more than half of the item's votes (ties included) put one candidate above the other.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Literal

from tether.data.jsonl import write_jsonl
from tether.data.records import PreferencePair
from tether.feedback.records import CandidateSet, Vote

Aggregate = Literal["none", "majority"]
MAJORITY_ANNOTATOR = "majority"


@dataclass(frozen=True)
class ExportSummary:
    votes: int
    ties: int  # tie votes: no pair written for them
    pairs: int  # records written
    no_majority: int = 0  # majority only: candidate pairs without a strict majority, dropped


def _pair(
    record: CandidateSet, chosen: str, rejected: str, annotator: str, reason: str, **extra
) -> PreferencePair:
    return PreferencePair(
        prompt=record.export_prompt,
        chosen=record.candidate(chosen).text,
        rejected=record.candidate(rejected).text,
        doc_id=record.doc_id,
        annotator=annotator,
        reason=reason,
        chosen_id=chosen,
        rejected_id=rejected,
        **extra,
    )


def vote_pairs(records: Mapping[str, CandidateSet], votes: Sequence[Vote]) -> list[PreferencePair]:
    """One pair per (vote, better candidate, worse candidate); ties give none."""
    pairs = []
    for v in votes:
        record = records[v.doc_id]
        for chosen, rejected in combinations(v.ranking, 2):  # combinations keep ranking order: better first
            pairs.append(_pair(record, chosen, rejected, v.annotator, v.reason))
    return pairs


def majority_pairs(
    records: Mapping[str, CandidateSet], votes: Sequence[Vote]
) -> tuple[list[PreferencePair], int]:
    """Merged pairs per item and candidate pair, and how many candidate pairs had no strict majority."""
    by_item: dict[str, list[Vote]] = defaultdict(list)
    for v in votes:
        by_item[v.doc_id].append(v)
    pairs, no_majority = [], 0
    for doc_id, item_votes in by_item.items():
        record = records[doc_id]
        total = len(item_votes)
        for x, y in combinations([c.id for c in record.candidates], 2):
            prefer_x = [v for v in item_votes if not v.tie and v.ranking.index(x) < v.ranking.index(y)]
            prefer_y = [v for v in item_votes if not v.tie and v.ranking.index(y) < v.ranking.index(x)]
            for winner, loser, support in ((x, y, prefer_x), (y, x, prefer_y)):
                if 2 * len(support) > total:
                    reason = Counter(v.reason for v in support).most_common(1)[0][0]
                    pairs.append(
                        _pair(
                            record,
                            winner,
                            loser,
                            MAJORITY_ANNOTATOR,
                            reason,
                            votes_for=len(support),
                            votes_total=total,
                        )
                    )
                    break
            else:
                no_majority += 1
    return pairs, no_majority


def export_pairs(
    records: Mapping[str, CandidateSet], votes: Sequence[Vote], out: str | Path, aggregate: Aggregate = "none"
) -> ExportSummary:
    """Write preference pairs to ``out`` (JSONL, atomically) and say what was written and dropped."""
    no_majority = 0
    if aggregate == "majority":
        pairs, no_majority = majority_pairs(records, votes)
    elif aggregate == "none":
        pairs = vote_pairs(records, votes)
    else:
        raise ValueError(f"unknown aggregate '{aggregate}'")
    written = write_jsonl(out, (p.model_dump(exclude_none=True) for p in pairs))
    return ExportSummary(
        votes=len(votes), ties=sum(v.tie for v in votes), pairs=written, no_majority=no_majority
    )
