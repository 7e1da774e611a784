"""The AI labeler: prefers the summary that is more faithful to its document and covers more of it.

It stands in for people when a run has none, and is the independent quality signal the PPO monitors
watch. Every number is a documented proxy, checkable by hand:

- **faithfulness** F = mean of (a) content-word precision: the share of the summary's content words
  (stemmed, stopwords removed) that occur in the document, and (b) bigram precision: the share of the
  summary's word bigrams that occur in the document. Words the document never says are the cheap
  signature of hallucination; bigrams also catch recombined words ("corn returns 8 units").
- **coverage** C = recall of key terms: the content words of the document's ``central_sentences``
  most central sentences (cosine of the sentence's and the whole document's content-word counts),
  plus, for BoolQ, the question's content words that the document contains (a checkable key fact).
- **conciseness** L = 1 while the summary has between ``min_words`` and
  ``max(max_ratio * document words, min_words)`` words, falling linearly to 0 at the document's own
  length (so copying the document is not a summary); below ``min_words`` it is ``words / min_words``.
- **repetition** R = distinct-2 of the summary's stemmed words (1 when no bigram repeats, or under two words).

``score = (F + C) / 2 * L * R``. A pair's preference strength is the score difference; with the
optional LLM judge it is ``(1 - w) * (s_x - s_y) + w * (2 p_x - 1)`` where ``p_x`` is the judge's
probability that x is better, averaged over both presentation orders (which cancels position bias).
Pairs weaker than ``margin`` are ties and give no preference pair.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations

from pydantic import Field

from tether.config import StrictModel
from tether.data.records import PreferencePair
from tether.engine.protocol import EngineLike
from tether.engine.types import ScoreRequest
from tether.feedback.agreement import best_label, cohen_kappa
from tether.feedback.records import CandidateSet, Vote
from tether.text import FUNCTION_WORDS, distinct_n, ngrams, stem, words

# A compact English stopword list: function words that say nothing about content.
STOPWORDS = FUNCTION_WORDS | frozenset(
    # summary boilerplate and contraction fragments
    [
        "document",
        "following",
        "however",
        "key",
        "must",
        "ones",
        "ourselves",
        "passage",
        "points",
        "s",
        "said",
        "says",
        "shall",
        "summary",
        "t",
        "text",
        "themselves",
        "though",
        "yet",
        "yourselves",
    ]
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def content_words(text: str) -> list[str]:
    """Stemmed words that are not stopwords, in order (repeats kept)."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def sentences(text: str) -> list[str]:
    """Sentences split at . ! ? followed by space and a capital, digit or quote."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _cosine(a: Counter, b: Counter) -> float:
    dot = sum(v * b[k] for k, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


def central_sentences(document: str, n: int) -> list[str]:
    """The ``n`` sentences whose content-word counts are closest (cosine) to the whole document's.

    Ties go to the earlier sentence; the result keeps document order.
    """
    sents = sentences(document)
    doc_counts = Counter(content_words(document))
    ranked = sorted(
        range(len(sents)), key=lambda i: (-_cosine(Counter(content_words(sents[i])), doc_counts), i)
    )
    return [sents[i] for i in sorted(ranked[:n])]


def key_terms(document: str, question: str | None = None, n_central: int = 2) -> set[str]:
    """Content words of the central sentences, plus the question's content words found in the document."""
    terms = {w for s in central_sentences(document, n_central) for w in content_words(s)}
    if question:
        in_doc = set(content_words(document))
        terms |= {w for w in content_words(question) if w in in_doc}
    return terms


class ProxyConfig(StrictModel):
    """Settings of the automatic faithfulness/coverage proxies."""

    central_sentences: int = Field(2, ge=1, description="How many central sentences define the key terms.")
    use_question: bool = Field(
        True, description="Count the BoolQ question's terms (found in the document) as key terms."
    )
    max_ratio: float = Field(
        0.4,
        gt=0,
        le=1,
        description="Summaries up to this fraction of the document's words are fully concise.",
    )
    min_words: int = Field(5, ge=1, description="Summaries shorter than this many words lose conciseness.")


@dataclass(frozen=True)
class SummaryScores:
    """The proxies for one summary (all in [0, 1]); ``score`` combines them."""

    faithfulness: float
    coverage: float
    conciseness: float
    repetition: float
    content_precision: float
    bigram_precision: float

    @property
    def score(self) -> float:
        return (self.faithfulness + self.coverage) / 2 * self.conciseness * self.repetition

    def value(self, proxy: str) -> float:
        """One proxy by name: a field, or ``"score"``."""
        return self.score if proxy == "score" else getattr(self, proxy)

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "score": self.score}


def proxy_scores(
    document: str, summary: str, question: str | None = None, config: ProxyConfig | None = None
) -> SummaryScores:
    """Faithfulness, coverage, conciseness and repetition of ``summary`` against ``document``."""
    config = config or ProxyConfig()
    doc_words = [stem(w) for w in words(document)]
    sum_words = [stem(w) for w in words(summary)]
    doc_content = set(content_words(document))
    sum_content = content_words(summary)

    content_precision = sum(w in doc_content for w in sum_content) / len(sum_content) if sum_content else 0.0
    sum_bigrams = ngrams(sum_words, 2)
    if sum_bigrams:
        doc_bigrams = set(ngrams(doc_words, 2))
        bigram_precision = sum(b in doc_bigrams for b in sum_bigrams) / len(sum_bigrams)
        faithfulness = (content_precision + bigram_precision) / 2
    else:
        bigram_precision = 0.0
        faithfulness = content_precision

    terms = key_terms(document, question if config.use_question else None, config.central_sentences)
    coverage = len(terms & set(sum_content)) / len(terms) if terms else 0.0

    n, doc_len = len(sum_words), len(doc_words)
    allowed = max(config.max_ratio * doc_len, config.min_words)
    if n < config.min_words:
        conciseness = n / config.min_words
    elif n <= allowed:
        conciseness = 1.0
    elif doc_len > allowed:
        conciseness = max(0.0, 1.0 - (n - allowed) / (doc_len - allowed))
    else:
        conciseness = 0.0
    repetition = distinct_n([sum_words], 2, empty=1.0)
    return SummaryScores(
        faithfulness=faithfulness,
        coverage=coverage,
        conciseness=conciseness,
        repetition=repetition,
        content_precision=content_precision,
        bigram_precision=bigram_precision,
    )


# ---------------------------------------------------------------------------------------------------
# Optional LLM judge
# ---------------------------------------------------------------------------------------------------


JUDGE_TEMPLATE = (
    "Document:\n{document}\n\nSummary (A): {a}\n\nSummary (B): {b}\n\n"
    "Which summary is more faithful to the document and covers its key points better? "
    "Answer with (A) or (B).\nAnswer:"
)
JUDGE_CHOICES = (" (A)", " (B)")


class LLMJudge:
    """P(x better than y) from a model's log-likelihood of " (A)" vs " (B)", both orders averaged."""

    def __init__(self, engine: EngineLike):
        self.engine = engine

    def prefer(self, items: Sequence[tuple[str, str, str]]) -> list[float]:
        """For each ``(document, x, y)``, the probability that ``x`` is the better summary."""
        requests = []
        for i, (doc, x, y) in enumerate(items):
            requests.append(
                ScoreRequest(
                    id=f"{i}/xy",
                    context=JUDGE_TEMPLATE.format(document=doc, a=x, b=y),
                    continuations=list(JUDGE_CHOICES),
                )
            )
            requests.append(
                ScoreRequest(
                    id=f"{i}/yx",
                    context=JUDGE_TEMPLATE.format(document=doc, a=y, b=x),
                    continuations=list(JUDGE_CHOICES),
                )
            )
        results = self.engine.score(requests, stage="rlhf.judge", progress=False)
        probs = []
        for i in range(len(items)):
            xy, yx = results[2 * i], results[2 * i + 1]
            p_a_first = _softmax2(xy.logprobs)[0]  # x shown as (A)
            p_b_second = _softmax2(yx.logprobs)[1]  # x shown as (B)
            probs.append((p_a_first + p_b_second) / 2)
        return probs


def _softmax2(logprobs: Sequence[float]) -> tuple[float, float]:
    a, b = logprobs
    top = max(a, b)
    ea, eb = math.exp(a - top), math.exp(b - top)
    return ea / (ea + eb), eb / (ea + eb)


# ---------------------------------------------------------------------------------------------------
# Labeling
# ---------------------------------------------------------------------------------------------------


class LabelerConfig(StrictModel):
    """How the AI labeler turns proxy scores (and an optional LLM judge) into preference pairs."""

    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    margin: float = Field(
        0.05, ge=0, description="Pairs whose preference strength is below this are ties: no pair is written."
    )
    llm_judge: bool = Field(
        False, description="Blend in an LLM judge (engine.score on ' (A)'/' (B)', both orders)."
    )
    judge_model: str | None = Field(
        None, description="Model spec of the LLM judge; None = the policy's base model."
    )
    judge_weight: float = Field(
        0.5, ge=0, le=1, description="Weight of the LLM judge in the preference strength."
    )


@dataclass(frozen=True)
class SetLabel:
    """The labeler's verdict on one candidate set."""

    doc_id: str
    scores: dict[str, SummaryScores]  # candidate id -> proxies
    strength: dict[tuple[str, str], float]  # (x, y) with x before y in the set -> strength (> 0 favours x)
    ranking: tuple[str, ...]  # best first, by summed strength
    margin: float

    @property
    def best(self) -> str | None:
        """The best candidate, or None when the top two are within the margin (a tie)."""
        first, second = self.ranking[0], self.ranking[1]
        return None if abs(self.pair_strength(first, second)) < self.margin else first

    def pair_strength(self, x: str, y: str) -> float:
        """Strength of x over y (antisymmetric)."""
        return self.strength[(x, y)] if (x, y) in self.strength else -self.strength[(y, x)]


@dataclass
class LabelResult:
    labels: list[SetLabel]
    pairs: list[PreferencePair]
    ties: int = 0  # candidate pairs below the margin, dropped
    annotator: str = "ai-proxy"
    stats: dict[str, float] = field(default_factory=dict)


def _reason(chosen: SummaryScores, rejected: SummaryScores) -> str:
    faith_gap = chosen.faithfulness - rejected.faithfulness
    cover_gap = chosen.coverage - rejected.coverage
    if faith_gap > 0 and faith_gap >= cover_gap:
        return "unfaithful"  # why the rejected one lost: it says things the document does not
    if cover_gap > 0:
        return "omits_key_point"
    return "other"  # length or repetition decided it


class AILabeler:
    """Scores candidate sets with the proxies (and an optional :class:`LLMJudge`) and emits pairs."""

    def __init__(self, config: LabelerConfig | None = None, judge: LLMJudge | None = None):
        self.config = config or LabelerConfig()
        self.judge = judge

    @property
    def annotator(self) -> str:
        return "ai-proxy+llm" if self.judge is not None else "ai-proxy"

    def score(self, document: str, summary: str, question: str | None = None) -> SummaryScores:
        return proxy_scores(document, summary, question, self.config.proxy)

    def quality(
        self,
        documents: Sequence[str],
        summaries: Sequence[str],
        questions: Sequence[str | None] | None = None,
    ) -> list[float]:
        """The combined proxy score of each summary: PPO's independent quality signal."""
        questions = questions or [None] * len(documents)
        return [self.score(d, s, q).score for d, s, q in zip(documents, summaries, questions, strict=True)]

    def compare(self, items: Sequence[tuple[str, str | None, str, str]]) -> list[float]:
        """Preference strength of x over y for each ``(document, question, x, y)`` (> 0 favours x)."""
        proxy = [self.score(d, x, q).score - self.score(d, y, q).score for d, q, x, y in items]
        if self.judge is None:
            return proxy
        w = self.config.judge_weight
        probs = self.judge.prefer([(d, x, y) for d, _, x, y in items])
        return [(1 - w) * s + w * (2 * p - 1) for s, p in zip(proxy, probs, strict=True)]

    def label_sets(self, sets: Sequence[CandidateSet]) -> list[SetLabel]:
        scored = []
        items: list[tuple[str, str | None, str, str]] = []
        for cset in sets:
            question = (cset.model_extra or {}).get("question")
            scores = {c.id: self.score(cset.document, c.text, question) for c in cset.candidates}
            keys = list(combinations([c.id for c in cset.candidates], 2))
            scored.append((cset, scores, keys))
            items += [
                (cset.document, question, cset.candidate(x).text, cset.candidate(y).text) for x, y in keys
            ]
        strengths = iter(self.compare(items))
        labels = []
        for cset, scores, keys in scored:
            strength = {key: next(strengths) for key in keys}
            total = dict.fromkeys(scores, 0.0)
            for (x, y), s in strength.items():
                total[x] += s
                total[y] -= s
            order = [c.id for c in cset.candidates]
            ranking = tuple(sorted(order, key=lambda c: (-total[c], order.index(c))))
            labels.append(SetLabel(cset.doc_id, scores, strength, ranking, self.config.margin))
        return labels

    def label(self, sets: Sequence[CandidateSet]) -> LabelResult:
        """Preference pairs for every candidate pair whose strength reaches the margin."""
        labels = self.label_sets(sets)
        pairs, ties = [], 0
        for cset, lab in zip(sets, labels, strict=True):
            for (x, y), s in lab.strength.items():
                if abs(s) < self.config.margin:
                    ties += 1
                    continue
                chosen, rejected = (x, y) if s > 0 else (y, x)
                pairs.append(
                    PreferencePair(
                        prompt=cset.export_prompt,
                        chosen=cset.candidate(chosen).text,
                        rejected=cset.candidate(rejected).text,
                        doc_id=cset.doc_id,
                        annotator=self.annotator,
                        reason=_reason(lab.scores[chosen], lab.scores[rejected]),
                        chosen_id=chosen,
                        rejected_id=rejected,
                    )
                )
        all_scores = [s for lab in labels for s in lab.scores.values()]
        stats = {
            name: sum(getattr(s, name) for s in all_scores) / max(len(all_scores), 1)
            for name in ("faithfulness", "coverage", "conciseness", "repetition")
        }
        stats["score"] = sum(s.score for s in all_scores) / max(len(all_scores), 1)
        return LabelResult(labels=labels, pairs=pairs, ties=ties, annotator=self.annotator, stats=stats)


# ---------------------------------------------------------------------------------------------------
# Agreement with human labels
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HumanAgreement:
    """How often the AI labeler chose what people chose.

    ``best_accuracy`` and ``kappa`` compare the best-candidate label (``"#k"`` by imported position,
    or ``"tie"``) per human vote, as ``tether label stats`` does between people. ``pairwise_accuracy``
    is over the ordered candidate pairs in people's rankings that the AI did not call a tie.
    """

    votes: int
    items: int
    best_accuracy: float | None
    kappa: float | None
    pairwise_accuracy: float | None
    pairwise_compared: int
    pairwise_ai_ties: int

    def to_dict(self) -> dict:
        return asdict(self)


def agreement_with_humans(
    records: Mapping[str, CandidateSet], votes: Sequence[Vote], labeler: AILabeler
) -> HumanAgreement:
    """Agreement between ``labeler`` and human ``votes`` on the candidate sets in ``records``."""
    voted = [records[d] for d in dict.fromkeys(v.doc_id for v in votes)]
    labels = {lab.doc_id: lab for lab in labeler.label_sets(voted)}
    ai, human = [], []
    agree = compared = ai_ties = 0
    for vote in votes:
        record, lab = records[vote.doc_id], labels[vote.doc_id]
        ai.append("tie" if lab.best is None else f"#{record.position(lab.best) + 1}")
        human.append(best_label(vote, record))
        for x, y in combinations(vote.ranking, 2):  # x ranked above y by the person
            s = lab.pair_strength(x, y)
            if abs(s) < labeler.config.margin:
                ai_ties += 1
                continue
            compared += 1
            agree += s > 0
    return HumanAgreement(
        votes=len(votes),
        items=len(labels),
        best_accuracy=sum(a == h for a, h in zip(ai, human, strict=True)) / len(votes) if votes else None,
        kappa=cohen_kappa(ai, human) if votes else None,
        pairwise_accuracy=agree / compared if compared else None,
        pairwise_compared=compared,
        pairwise_ai_ties=ai_ties,
    )
