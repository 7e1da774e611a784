"""Inter-annotator agreement on the "which candidate is best" choice.

The category of a vote is the position of its best candidate in the imported set (``"#1"``, ``"#2"``,
...) or ``"tie"``. Positions, not candidate ids, make categories comparable across items: ids are
often unique per item, which would make chance agreement ~0 and inflate kappa.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from tether.feedback.records import CandidateSet, Vote

TIE_LABEL = "tie"


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e).

    p_o is the observed agreement; p_e the agreement expected from each rater's own label frequencies.
    None when undefined: no items, or both raters always used one and the same label (p_e = 1).
    """
    if len(a) != len(b):
        raise ValueError(f"raters labeled different numbers of items: {len(a)} vs {len(b)}")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    freq_a, freq_b = Counter(a), Counter(b)
    p_e = sum(freq_a[c] * freq_b[c] for c in freq_a) / (n * n)
    if p_e == 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def krippendorff_alpha_nominal(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal data: 1 - (n - 1) * D_o / D_e over the coincidence matrix.

    ``units`` holds, per item, the labels its raters gave (any number, missing ones simply absent);
    items with fewer than two labels are not pairable and are ignored. With ``n`` pairable labels,
    ``D_o = sum_u (m_u^2 - sum_c n_uc^2) / (m_u - 1)`` (disagreeing ordered pairs within a unit,
    weighted by 1/(m_u - 1)) and ``D_e = n^2 - sum_c n_c^2``. None when undefined (every label equal).
    """
    observed = 0.0
    totals: Counter[Hashable] = Counter()
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        counts = Counter(unit)
        observed += (m * m - sum(v * v for v in counts.values())) / (m - 1)
        totals.update(counts)
    n = sum(totals.values())
    expected = n * n - sum(v * v for v in totals.values())
    if expected == 0:
        return None
    return 1.0 - (n - 1) * observed / expected


def best_label(vote: Vote, record: CandidateSet) -> str:
    """The vote's category for agreement: ``"tie"`` or ``"#k"``, k = 1-based imported position of the best."""
    if vote.best is None:
        return TIE_LABEL
    return f"#{record.position(vote.best) + 1}"


@dataclass(frozen=True)
class PairAgreement:
    annotator_a: str
    annotator_b: str
    shared_items: int
    observed: float  # fraction of shared items where both picked the same best (or both tied)
    kappa: float | None


@dataclass(frozen=True)
class AnnotatorCounts:
    votes: int
    ties: int
    skips: int = 0


@dataclass(frozen=True)
class AgreementReport:
    items: int  # items that have at least one vote
    votes: int
    ties: int
    multi_items: int  # items with >= 2 votes: the ones agreement is measured on
    alpha: float | None  # Krippendorff's alpha (nominal) over multi_items
    pairs: list[PairAgreement] = field(default_factory=list)
    annotators: dict[str, AnnotatorCounts] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "items": self.items,
            "votes": self.votes,
            "ties": self.ties,
            "multi_items": self.multi_items,
            "krippendorff_alpha": self.alpha,
            "pairs": [p.__dict__ for p in self.pairs],
            "annotators": {k: v.__dict__ for k, v in self.annotators.items()},
        }


def agreement_report(
    records: Mapping[str, CandidateSet], votes: Sequence[Vote], skips: Mapping[str, int] | None = None
) -> AgreementReport:
    """Agreement over ``votes`` (records maps doc_id to its set); ``skips`` adds per-annotator skip counts."""
    by_item: dict[str, dict[str, str]] = defaultdict(dict)
    for v in votes:
        by_item[v.doc_id][v.annotator] = best_label(v, records[v.doc_id])
    multi = {doc: labels for doc, labels in by_item.items() if len(labels) >= 2}

    names = sorted({v.annotator for v in votes} | set(skips or {}))
    pairs = []
    for a, b in combinations(names, 2):
        shared = [doc for doc, labels in multi.items() if a in labels and b in labels]
        if not shared:
            continue
        la = [multi[d][a] for d in shared]
        lb = [multi[d][b] for d in shared]
        observed = sum(x == y for x, y in zip(la, lb, strict=True)) / len(shared)
        pairs.append(PairAgreement(a, b, len(shared), observed, cohen_kappa(la, lb)))

    counts = {
        name: AnnotatorCounts(
            votes=sum(v.annotator == name for v in votes),
            ties=sum(v.annotator == name and v.tie for v in votes),
            skips=(skips or {}).get(name, 0),
        )
        for name in names
    }
    return AgreementReport(
        items=len(by_item),
        votes=len(votes),
        ties=sum(v.tie for v in votes),
        multi_items=len(multi),
        alpha=krippendorff_alpha_nominal(list(labels.values()) for labels in multi.values()),
        pairs=pairs,
        annotators=counts,
    )
