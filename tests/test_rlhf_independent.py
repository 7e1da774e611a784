"""RLHF on signals it was not trained on: the QA reader, win rates, agreement, the labelling sheet."""

from __future__ import annotations

import json
import math

import pytest

from fakes import ScriptedEngine
from tether.engine.types import Prompt, ScoreRequest
from tether.feedback.records import load_labelled_sets
from tether.rlhf.documents import SummaryDocument
from tether.rlhf.independent import (
    QA_TEMPLATE,
    Agreement,
    QAReader,
    ReaderQuality,
    candidate_sets_for_labelling,
    labelled_pairs,
    qa_check,
    side,
    win_rates,
)


def _reader_that_reads(request: ScoreRequest) -> list[float]:
    """Says yes iff the context before the question mentions 'yes-fact'; knows nothing otherwise."""
    context = request.context.split("\nQuestion:")[0]
    if "yes-fact" in context:
        return [math.log(0.1), math.log(0.9)]  # " no", " yes"
    if "no-fact" in context:
        return [math.log(0.8), math.log(0.2)]
    return [math.log(0.5), math.log(0.5)]


def _docs() -> list[SummaryDocument]:
    return [
        SummaryDocument(
            id=f"d{i}",
            text=f"passage {i} {'yes-fact' if i % 2 else 'no-fact'}",
            question=f"is {i} odd",
            answer=bool(i % 2),
            source="boolq",
        )
        for i in range(8)
    ]


def test_reader_uses_lm_eval_boolq_prompt_and_normalises_two_ways():
    engine = ScriptedEngine(score=_reader_that_reads)
    probs = QAReader(engine).p_correct([("yes-fact here", "is it?", True), ("no-fact", "is it", True)])
    assert probs == pytest.approx([0.9, 0.2])
    assert engine.scored[0].context == QA_TEMPLATE.format(context="yes-fact here", question="is it")
    assert engine.scored[0].continuations == [" no", " yes"]
    assert QAReader(engine).p_correct([("", "q", False)]) == pytest.approx([0.5])
    assert engine.scored[-1].context.startswith("Question: q?")  # no context: no leading newline


def test_qa_check_rewards_summaries_that_keep_the_answer_and_reports_signal():
    docs = _docs()
    keeps = {d.id: d.text for d in docs}  # the fact survives
    drops = {d.id: f"summary {d.id}" for d in docs}  # the fact is gone
    check = qa_check(QAReader(ScriptedEngine(score=_reader_that_reads)), docs, {"base": drops, "ppo": keeps})
    assert check.signal and check.question_only == pytest.approx(0.5)
    assert check.passage == pytest.approx((0.9 + 0.8) / 2)
    base, ppo = check.models
    assert base.vs_baseline is None and base.p_correct == pytest.approx(0.5)
    assert ppo.vs_baseline.delta == pytest.approx(0.35) and ppo.vs_baseline.significant
    assert ppo.accuracy == 1.0 and base.accuracy == 0.0


def test_qa_check_without_signal_says_so():
    deaf = ScriptedEngine(score=lambda r: [math.log(0.4), math.log(0.6)])
    docs = _docs()
    check = qa_check(QAReader(deaf), docs, {"base": {d.id: d.text for d in docs}})
    assert not check.signal


def test_reader_quality_needs_question_and_answer_on_prompts():
    quality = ReaderQuality(QAReader(ScriptedEngine(score=_reader_that_reads)))
    good = Prompt(id="p", text="t", question="q", answer=True)
    assert quality.score([good], ["yes-fact"]).scores == pytest.approx([0.9])
    with pytest.raises(ValueError, match="question/answer"):
        quality.score([Prompt(id="p", text="t")], ["x"])


def test_side_margin():
    assert [side(s, 0.05) for s in (0.2, 0.01, -0.01, -0.2)] == ["first", "tie", "tie", "second"]


def test_agreement_counts_decided_pairs_and_scorer_ties():
    human = ["first", "second", "tie", "first", "second"]
    predicted = ["first", "first", "first", "tie", "second"]
    a = Agreement.of("x", human, predicted)
    assert (a.n, a.decided, a.scorer_ties) == (5, 3, 1)
    assert a.accuracy == pytest.approx(2 / 3)
    assert a.kappa is not None and a.kappa < 1


def _labelled(tmp_path, rows):
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return load_labelled_sets(path)


def _set(doc, first_model, second_model, best, annotator="team"):
    ranking = [] if best is None else ([best, "B" if best == "A" else "A"])
    return {
        "doc_id": doc,
        "document": "doc text",
        "candidates": [
            {"id": "A", "text": f"{first_model} text", "model": first_model},
            {"id": "B", "text": f"{second_model} text", "model": second_model},
        ],
        "votes": [
            {"annotator": annotator, "ranking": ranking, "reason": "both_fine" if best is None else "other"}
        ],
    }


def test_win_rates_orient_each_pair_whichever_side_a_model_was_shown_on(tmp_path):
    rows = [
        _set("d1", "base", "ppo", "B"),  # ppo wins (shown second)
        _set("d2", "ppo", "base", "A"),  # ppo wins (shown first)
        _set("d3", "ppo", "base", "B"),  # base wins
        _set("d4", "base", "ppo", None),  # tie
    ]
    pairs = labelled_pairs(_labelled(tmp_path, rows))
    (rate,) = win_rates(pairs, [p.human for p in pairs], "people")
    assert (rate.model, rate.other) == ("ppo", "base")
    assert (rate.wins, rate.ties, rate.losses) == (2, 1, 1)
    assert rate.preference.delta == pytest.approx(0.25) and rate.preference.n == 4
    assert rate.win_rate == pytest.approx(2 / 3)


def test_labelled_pairs_need_model_names(tmp_path):
    row = _set("d1", "base", "ppo", "A")
    del row["candidates"][0]["model"]
    with pytest.raises(ValueError, match="must name their 'model'"):
        labelled_pairs(_labelled(tmp_path, [row]))


def test_labelling_sheet_skips_identical_texts_and_hides_sides_by_hash():
    docs = _docs()
    summaries = {
        "base": {d.id: f"base {d.id}" for d in docs},
        "ppo": {d.id: (f"base {d.id}" if d.id == "d0" else f"ppo {d.id}") for d in docs},
    }
    sets = candidate_sets_for_labelling(docs, summaries, [("base", "ppo")])
    assert [s.doc_id for s in sets] == [f"d{i}/base-vs-ppo" for i in range(1, 8)]
    firsts = {s.candidates[0].model_extra["model"] for s in sets}
    assert firsts == {"base", "ppo"}  # both orders occur
    for s in sets:
        for c in s.candidates:
            assert c.text.startswith(c.model_extra["model"])
    again = candidate_sets_for_labelling(docs, summaries, [("base", "ppo")])
    assert [s.model_dump() for s in again] == [s.model_dump() for s in sets]


def test_qa_signal_needs_a_reader_and_stands_alone():
    from tether.config import load_config
    from tether.errors import ConfigError
    from tether.rlhf.pipeline import RLHFConfig, check_rlhf_config

    with pytest.raises(ConfigError, match="checks.reader"):
        load_config(
            RLHFConfig, None, ["ppo_reward.monitor_quality=qa", "checks.reader=null"], check=check_rlhf_config
        )
    with pytest.raises(ConfigError, match="alone"):
        load_config(RLHFConfig, None, ["ppo_reward.validation_quality=[qa,coverage]"])


def test_the_committed_team_labels_load_and_cover_what_issue_14_asks():
    """data/rlhf_human/labels.jsonl: at least 150 held-out pairs, each with one team vote, every
    candidate naming the model that wrote it (the win rates need it), no pair twice."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data" / "rlhf_human" / "labels.jsonl"
    labelled = load_labelled_sets(path)
    assert len(labelled) >= 150
    assert len({s.record.doc_id for s in labelled}) == len(labelled)
    for s in labelled:
        assert [v.annotator for v in s.votes] == ["team"], s.where
        assert all(c.model for c in s.record.candidates), s.where
    kinds = {json.loads(line)["kind"] for line in path.read_text().splitlines()}
    assert kinds == {"reward-model held-out candidates", "held-out comparisons"}
