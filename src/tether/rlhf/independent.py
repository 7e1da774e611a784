"""RLHF measured on signals it was not trained on.

The AI labeler's proxies (support, coverage, conciseness) made the preference pairs, the reward model
learned them, and PPO optimised the reward model: the proxies cannot also be the evidence that PPO
helped. Three signals outside that family:

* **Human preferences** on held-out summary pairs, labelled by people under a written guide and
  imported with ``tether label import`` (a candidate set per pair, each candidate naming its
  ``model``). They give the policies' win rates against the base and how well the AI labeler, the
  reward model and the LLM judge agree with people.
* **A QA check from the data itself**: BoolQ passages come with a yes/no question and its answer. A
  reader model that takes no part in training answers the question from the summary alone;
  P(correct answer) is compared with answering from the passage (what a perfect summary could give)
  and from the question alone (what the reader guesses without one).
* **An LLM judge on another model** (``LLMJudge`` over a different engine, e.g. gemma3-270m): the
  A/B comparison of each policy's summary with the base's, both orders.

Every delta is paired over documents with a bootstrap CI, an exact sign-flip p-value and the minimum
detectable effect at its n. :class:`ReaderQuality` is the QA check as the PPO monitors' quality signal.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from tether.audit.stats import paired_test
from tether.engine.protocol import EngineLike
from tether.engine.types import Prompt, ScoreRequest
from tether.feedback.agreement import cohen_kappa
from tether.feedback.records import CandidateSet, LabelledSet
from tether.rlhf.documents import SummaryDocument
from tether.train.ppo.types import BatchScores

QA_TEMPLATE = "{context}\nQuestion: {question}?\nAnswer:"
"""lm-eval's BoolQ prompt; the context is a summary, the passage, or nothing."""
QA_CHOICES = (" no", " yes")


def _p_second(logprobs: Sequence[float]) -> float:
    a, b = logprobs
    top = max(a, b)
    return math.exp(b - top) / (math.exp(a - top) + math.exp(b - top))


class QAReader:
    """P(correct yes/no answer) of a document's question, read from a given text by ``engine``."""

    def __init__(self, engine: EngineLike):
        self.engine = engine

    @property
    def name(self) -> str:
        return self.engine.name

    def p_correct(self, items: Sequence[tuple[str, str, bool]], *, stage: str = "rlhf.qa") -> list[float]:
        """For each ``(context, question, answer)``: P(answer) against the other answer."""
        requests = [
            ScoreRequest(
                id=str(i),
                context=QA_TEMPLATE.format(context=context, question=question.rstrip("?")).lstrip("\n"),
                continuations=list(QA_CHOICES),
            )
            for i, (context, question, _) in enumerate(items)
        ]
        results = self.engine.score(requests, stage=stage, progress=False) if requests else []
        probs = []
        for (_, _, answer), result in zip(items, results, strict=True):
            p_yes = _p_second(result.logprobs)
            probs.append(p_yes if answer else 1.0 - p_yes)
        return probs


class ReaderQuality:
    """The QA check as a PPO quality signal: P(correct answer) from each response, by a reader the
    policy never trains against. Prompts must carry ``question`` and ``answer`` (``ppo_prompts``)."""

    def __init__(self, reader: QAReader):
        self.reader = reader

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> BatchScores:
        items = []
        for prompt, response in zip(prompts, responses, strict=True):
            extra = prompt.model_extra or {}
            if extra.get("question") is None or extra.get("answer") is None:
                raise ValueError(
                    f"PPO prompt {prompt.id!r} has no question/answer: the QA quality signal needs a "
                    "source with them (documents.source: boolq)"
                )
            items.append((response, extra["question"], bool(extra["answer"])))
        return BatchScores(self.reader.p_correct(items, stage="ppo.quality"), {})


# ---------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """mean(new − base) over paired documents: CI, exact p, minimum detectable effect, n."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    mde: float | None
    n: int

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    @classmethod
    def of(cls, base: Mapping[str, float], new: Mapping[str, float]) -> Delta:
        t = paired_test(base, new, n_boot=2000)
        return cls(t.delta, t.ci_low, t.ci_high, t.p_value, t.mde, t.n)

    def text(self) -> str:
        mde = "—" if self.mde is None else f"{self.mde:.3f}"
        return f"{self.delta:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}] p={self.p_value:.3f} MDE {mde}"


@dataclass(frozen=True)
class QAModelResult:
    model: str
    p_correct: float
    accuracy: float
    vs_baseline: Delta | None


@dataclass(frozen=True)
class QACheck:
    """The reader's P(correct) from each model's summaries, next to its passage and no-context runs.

    ``signal`` is False when the reader does no better from the passage than from the question
    alone (paired CI covers 0): then it cannot tell a good summary from a bad one either."""

    reader: str
    n: int
    passage: float
    question_only: float
    passage_vs_question_only: Delta
    signal: bool
    models: list[QAModelResult]

    def to_dict(self) -> dict:
        return asdict(self)


def qa_check(
    reader: QAReader, docs: Sequence[SummaryDocument], summaries: Mapping[str, Mapping[str, str]]
) -> QACheck:
    """``summaries``: model name -> doc id -> summary; the first model is the baseline."""
    docs = [d for d in docs if d.question and d.answer is not None]
    if not docs:
        raise ValueError("the QA check needs documents with a question and answer (BoolQ)")
    ids = [d.id for d in docs]

    def run(contexts: Sequence[str]) -> dict[str, float]:
        items = [(c, d.question, bool(d.answer)) for c, d in zip(contexts, docs, strict=True)]
        return dict(zip(ids, reader.p_correct(items), strict=True))

    passage = run([d.text for d in docs])
    blind = run(["" for _ in docs])
    passage_delta = Delta.of(blind, passage)
    results, baseline = [], None
    for name, texts in summaries.items():
        scores = run([texts[d.id] for d in docs])
        results.append(
            QAModelResult(
                name,
                p_correct=_mean(scores.values()),
                accuracy=_mean(float(p > 0.5) for p in scores.values()),
                vs_baseline=None if baseline is None else Delta.of(baseline, scores),
            )
        )
        baseline = baseline or scores
    return QACheck(
        reader.name,
        len(docs),
        passage=_mean(passage.values()),
        question_only=_mean(blind.values()),
        passage_vs_question_only=passage_delta,
        signal=passage_delta.ci_low > 0,
        models=results,
    )


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


# --- pairwise preferences (people, the AI labeler, the reward model, an LLM judge) -------------------

PairLabel = str  # "first", "second" or "tie": which candidate of a set (imported order) is better


@dataclass(frozen=True)
class LabelledPair:
    """One labelled comparison of two models' summaries of one document."""

    doc_id: str
    document: str
    prompt: str
    question: str | None
    first: tuple[str, str]  # (model, summary) in the set's imported order
    second: tuple[str, str]
    human: PairLabel
    annotator: str


def labelled_pairs(labelled: Sequence[LabelledSet]) -> list[LabelledPair]:
    """Every vote on a two-candidate set whose candidates name their ``model``."""
    pairs = []
    for item in labelled:
        record = item.record
        if len(record.candidates) != 2:
            continue
        models = [(c.model_extra or {}).get("model") for c in record.candidates]
        if None in models:
            raise ValueError(f"{item.where}: candidates must name their 'model' for the RLHF check")
        a, b = record.candidates
        for vote in item.votes:
            human = "tie" if not vote.ranking else ("first" if vote.ranking[0] == a.id else "second")
            pairs.append(
                LabelledPair(
                    record.doc_id,
                    record.document,
                    record.export_prompt,
                    (record.model_extra or {}).get("question"),
                    (models[0], a.text),
                    (models[1], b.text),
                    human,
                    vote.annotator,
                )
            )
    return pairs


@dataclass(frozen=True)
class Agreement:
    """A scorer's agreement with people: Cohen's kappa over first/second/tie, and accuracy on the
    pairs where both took a side (the scorer's ties are counted apart)."""

    scorer: str
    n: int
    kappa: float | None
    accuracy: float | None
    accuracy_ci: tuple[float, float] | None
    decided: int
    scorer_ties: int

    @classmethod
    def of(cls, scorer: str, human: Sequence[PairLabel], predicted: Sequence[PairLabel]) -> Agreement:
        from tether.judges.calibration import wilson_interval

        decided = [(h, p) for h, p in zip(human, predicted, strict=True) if h != "tie" and p != "tie"]
        right = sum(h == p for h, p in decided)
        ties = sum(1 for h, p in zip(human, predicted, strict=True) if h != "tie" and p == "tie")
        return cls(
            scorer,
            len(human),
            cohen_kappa(list(human), list(predicted)) if human else None,
            right / len(decided) if decided else None,
            wilson_interval(right, len(decided)) if decided else None,
            len(decided),
            ties,
        )


def side(strength: float, margin: float) -> PairLabel:
    """ "first" when ``strength`` (first over second) clears ``margin``, "second" below −margin."""
    if strength > margin:
        return "first"
    if strength < -margin:
        return "second"
    return "tie"


@dataclass(frozen=True)
class WinRate:
    """``model`` against ``other`` by one scorer: wins/ties/losses and mean(win=1, tie=0, loss=−1)
    with its paired CI (0 means no preference)."""

    model: str
    other: str
    scorer: str
    wins: int
    ties: int
    losses: int
    preference: Delta

    @property
    def win_rate(self) -> float | None:
        decided = self.wins + self.losses
        return self.wins / decided if decided else None

    @classmethod
    def of(cls, model: str, other: str, scorer: str, signed: Mapping[str, float]) -> WinRate:
        """From +1 (``model`` wins) / 0 (tie) / −1 (it loses) per comparison id."""
        count = Counter(signed.values())
        preference = Delta.of(dict.fromkeys(signed, 0.0), signed)
        return cls(model, other, scorer, int(count[1.0]), int(count[0.0]), int(count[-1.0]), preference)


SIGN = {"first": 1.0, "second": -1.0, "tie": 0.0}
"""A pair label as the first candidate's outcome."""


def win_rates(pairs: Sequence[LabelledPair], labels: Sequence[PairLabel], scorer: str) -> list[WinRate]:
    """Per unordered model pair, each non-baseline model against the other, by ``labels``."""
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for pair, label in zip(pairs, labels, strict=True):
        key = tuple(sorted((pair.first[0], pair.second[0])))
        signed = SIGN[label]
        if pair.first[0] != key[1]:  # orient: +1 when the later-sorted model (key[1]) wins
            signed = -signed
        groups.setdefault(key, {})[f"{pair.doc_id}/{pair.annotator}"] = signed
    return [WinRate.of(model, other, scorer, scores) for (other, model), scores in sorted(groups.items())]


@dataclass
class HumanCheck:
    labels: str
    pairs: int
    annotators: list[str]
    human_ties: int
    win_rates: list[WinRate] = field(default_factory=list)
    agreement: list[Agreement] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def human_check(pairs: Sequence[LabelledPair], labels_path: str, scorers: Mapping[str, Sequence[PairLabel]]):
    """Win rates by people's labels and each scorer's agreement with them."""
    human = [p.human for p in pairs]
    return HumanCheck(
        labels=labels_path,
        pairs=len(pairs),
        annotators=sorted({p.annotator for p in pairs}),
        human_ties=human.count("tie"),
        win_rates=win_rates(pairs, human, "people"),
        agreement=[Agreement.of(name, human, predicted) for name, predicted in scorers.items()],
    )


def judge_win_rates(
    judge_probs: Mapping[str, Mapping[str, float]], baseline: str, margin: float, scorer: str
) -> list[WinRate]:
    """Win rates from an LLM judge's P(model's summary better than the baseline's) per document."""
    return [
        WinRate.of(model, baseline, scorer, {doc: SIGN[side(p - 0.5, margin)] for doc, p in probs.items()})
        for model, probs in judge_probs.items()
    ]


def candidate_sets_for_labelling(
    docs: Sequence[SummaryDocument],
    summaries: Mapping[str, Mapping[str, str]],
    model_pairs: Sequence[tuple[str, str]],
    *,
    salt: str = "tether-human-pairs",
) -> list[CandidateSet]:
    """Two-candidate sets, one per document and model pair whose summaries differ, in an order fixed
    by a hash (so the labeller cannot learn which side a model is on). Candidates name their
    ``model``; the labelling sheet must not show it."""
    from tether.rlhf.documents import hash_fraction

    sets = []
    for doc in docs:
        for left, right in model_pairs:
            a, b = summaries[left][doc.id], summaries[right][doc.id]
            if a.strip() == b.strip():
                continue  # the same text: nothing for a person to judge
            if hash_fraction(f"{doc.id}/{left}/{right}", salt) < 0.5:
                (left_name, a), (right_name, b) = (right, b), (left, a)
            else:
                left_name, right_name = left, right
            sets.append(
                CandidateSet(
                    doc_id=f"{doc.id}/{left}-vs-{right}",
                    document=doc.text,
                    candidates=[
                        {"id": "A", "text": a, "model": left_name},
                        {"id": "B", "text": b, "model": right_name},
                    ],
                    question=doc.question,
                    answer=doc.answer,
                )
            )
    return sets


__all__ = [
    "QA_CHOICES",
    "QA_TEMPLATE",
    "Agreement",
    "Delta",
    "HumanCheck",
    "LabelledPair",
    "QACheck",
    "QAReader",
    "ReaderQuality",
    "WinRate",
    "candidate_sets_for_labelling",
    "human_check",
    "judge_win_rates",
    "labelled_pairs",
    "qa_check",
    "side",
    "win_rates",
]
