"""The AI labeler's proxies against hand-computed values; pairs, ties, the LLM judge, human agreement."""

from __future__ import annotations

import pytest

from fakes import ScriptedEngine
from tether.feedback.records import CandidateSet
from tether.feedback.store import LabelStore
from tether.rlhf.labeler import (
    AILabeler,
    LabelerConfig,
    LLMJudge,
    agreement_with_humans,
    central_sentences,
    content_words,
    key_terms,
    proxy_scores,
)
from tether.text import stem

DOC = "The river flooded the town in 1990. Farmers lost their crops. The mayor asked for federal aid."
GOOD = "The river flooded the town and farmers lost crops."
BAD = "Aliens invaded the town."


def test_stem_and_content_words():
    assert [stem(w) for w in ("flooded", "farmers", "crops", "asked", "running", "is")] == [
        "flood",
        "farmer",
        "crop",
        "asked",
        "runn",
        "is",
    ]
    assert content_words("The farmers lost their crops.") == ["farmer", "lost", "crop"]


def test_central_sentences_and_key_terms():
    """Content words are all distinct, so cosine with the document is sqrt(n_i / 11): sentences 1 and 3
    (4 content words) beat sentence 2 (3 words)."""
    assert central_sentences(DOC, 2) == [
        "The river flooded the town in 1990.",
        "The mayor asked for federal aid.",
    ]
    assert key_terms(DOC) == {"river", "flood", "town", "1990", "mayor", "asked", "federal", "aid"}
    # Question terms count only when the document contains them ("lose" does not occur, "farmer" does).
    assert key_terms(DOC, "did farmers lose crops") == key_terms(DOC) | {"farmer", "crop"}


def test_proxy_scores_hand_values():
    """GOOD: content words river flood town farmer lost crop all occur -> precision 1. Of its 8 bigrams
    the document has 5 (the-river, river-flood, flood-the, the-town, farmer-lost) -> 0.625. F = 0.8125.
    Coverage: river, flood, town of 8 key terms = 0.375. 9 words vs allowed max(0.4 * 17, 5) = 6.8 of a
    17-word document: L = 1 - 2.2 / 10.2. No repeated bigram: R = 1."""
    s = proxy_scores(DOC, GOOD)
    assert s.content_precision == 1.0 and s.bigram_precision == 0.625
    assert s.faithfulness == pytest.approx(0.8125)
    assert s.coverage == pytest.approx(0.375)
    assert s.conciseness == pytest.approx(1 - 2.2 / 10.2)
    assert s.repetition == 1.0
    assert s.score == pytest.approx((0.8125 + 0.375) / 2 * (1 - 2.2 / 10.2))
    # With the question's terms (farmer, crop) as key facts, coverage is 5 / 10.
    assert proxy_scores(DOC, GOOD, "did farmers lose crops").coverage == pytest.approx(0.5)

    bad = proxy_scores(DOC, BAD)  # alien invad town: 1/3 content, 1/3 bigrams; 4 words < 5
    assert bad.faithfulness == pytest.approx(1 / 3)
    assert bad.coverage == pytest.approx(1 / 8)
    assert bad.conciseness == pytest.approx(0.8)


def test_copying_or_repeating_is_not_a_summary():
    assert proxy_scores(DOC, DOC).conciseness == 0.0  # the whole document: no compression
    looped = proxy_scores(DOC, "the river the river the river the river")
    assert looped.repetition == pytest.approx(2 / 7)
    assert proxy_scores(DOC, "").score == 0.0


def _set(doc_id: str, texts: list[str], document: str = DOC, **extra) -> CandidateSet:
    return CandidateSet(
        doc_id=doc_id,
        document=document,
        candidates=[{"id": f"s{i}", "text": t} for i, t in enumerate(texts)],
        **extra,
    )


def test_label_pairs_reasons_and_ties():
    labeler = AILabeler(LabelerConfig(margin=0.05))
    result = labeler.label([_set("d1", [BAD, GOOD, GOOD])])
    # s1 and s2 are identical: a tie, dropped. s1 > s0 and s2 > s0.
    assert result.ties == 1
    assert [(p.chosen_id, p.rejected_id) for p in result.pairs] == [("s1", "s0"), ("s2", "s0")]
    pair = result.pairs[0]
    assert pair.reason == "unfaithful"  # faithfulness gap 0.479 > coverage gap 0.25
    assert pair.prompt.endswith(DOC) and pair.annotator == "ai-proxy" and pair.doc_id == "d1"
    assert result.labels[0].ranking == ("s1", "s2", "s0")
    assert result.labels[0].best is None  # the top two are equally good: no single best
    assert labeler.label_sets([_set("d3", [BAD, GOOD])])[0].best == "s1"
    # the question travels in the set's extra keys and raises coverage
    with_q = labeler.label_sets([_set("d2", [GOOD, BAD], question="did farmers lose crops")])[0]
    assert with_q.scores["s0"].coverage == pytest.approx(0.5)


def likes_a_and_rivers(request) -> list[float]:
    """Scores ' (A)' vs ' (B)': a strong position bias for (A), plus a preference for texts with 'river'."""
    a_text = request.context.split("Summary (A): ")[1].split("\n")[0]
    lp_a = -1.0 + (1.0 if "river" in a_text else -1.0) * 0.5
    lp_b = -2.0 + (1.0 if "river" not in a_text else -1.0) * 0.5
    return [lp_a, lp_b]


def test_llm_judge_averages_both_orders():
    scorer = ScriptedEngine(score=likes_a_and_rivers)
    judge = LLMJudge(scorer)
    p_good, p_bad = judge.prefer([(DOC, GOOD, BAD), (DOC, BAD, GOOD)])
    # order xy: logits A=-0.5, B=-2.5 -> P(A)=σ(2); order yx: A=-1.5, B=-1.5 -> P(B)=0.5
    import math

    sig2 = 1 / (1 + math.exp(-2))
    assert p_good == pytest.approx((sig2 + 0.5) / 2)
    assert p_bad == pytest.approx(1 - p_good)  # swapping x and y mirrors the probability
    assert len(scorer.scored) == 4 and all(r.continuations == [" (A)", " (B)"] for r in scorer.scored)

    blended = AILabeler(LabelerConfig(llm_judge=True, judge_weight=0.5), judge)
    proxy_gap = proxy_scores(DOC, GOOD).score - proxy_scores(DOC, BAD).score
    (strength,) = blended.compare([(DOC, None, GOOD, BAD)])
    assert strength == pytest.approx(0.5 * proxy_gap + 0.5 * (2 * p_good - 1))
    assert blended.annotator == "ai-proxy+llm"


def test_agreement_with_humans_hand_values(tmp_path):
    """AI best by position: [#1, #1, #1, #2]; people: [#1, #2, tie, #2]. p_o = 2/4; p_e = (3*1 + 1*2)/16;
    kappa = (0.5 - 5/16) / (1 - 5/16) = 3/11. Ranked pairs: d1 agree, d2 disagree, d4 agree -> 2/3."""
    store = LabelStore(tmp_path / "labels.db", create=True)
    sets = [
        _set("d1", [GOOD, BAD]),
        _set("d2", [GOOD, BAD]),
        _set("d3", [GOOD, BAD]),
        _set("d4", [BAD, GOOD]),
    ]
    store.import_sets(sets)
    store.add_annotator("ann")
    ann = store.annotators()[0]
    items = {i.record.doc_id: i.id for i in store.items()}
    store.record_vote(ann, items["d1"], ["s0", "s1"], "unfaithful")
    store.record_vote(ann, items["d2"], ["s1", "s0"], "omits_key_point")
    store.record_vote(ann, items["d3"], [], "both_fine")
    store.record_vote(ann, items["d4"], ["s1", "s0"], "unfaithful")
    records = {i.record.doc_id: i.record for i in store.items()}
    agreement = agreement_with_humans(records, store.votes(), AILabeler())
    assert agreement.votes == 4 and agreement.items == 4
    assert agreement.best_accuracy == pytest.approx(0.5)
    assert agreement.kappa == pytest.approx(3 / 11)
    assert agreement.pairwise_accuracy == pytest.approx(2 / 3) and agreement.pairwise_compared == 3
