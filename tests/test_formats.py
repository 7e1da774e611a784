"""Prompt formats match lm-evaluation-harness character for character (hand-checked items)."""

from __future__ import annotations

import pytest

from tether.data.records import BBQItem, MCItem
from tether.data.sources import load_arc, load_bbq, load_hellaswag, load_mmlu
from tether.engine.types import ScoreRequest, ScoreResult
from tether.errors import DataError
from tether.evals.formats import (
    FORMATS,
    HEADLINE_METRIC,
    arc_request,
    bbq_request,
    hellaswag_preprocess,
    hellaswag_request,
    mmlu_request,
    predict,
)


def test_mmlu_matches_lm_eval_default_template():
    item = next(r for r in load_mmlu() if r.id == "mmlu/anatomy/0")
    req = mmlu_request(item)
    assert req.id == "mmlu/anatomy/0"
    assert req.context == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "A lesion causing compression of the facial nerve at the stylomastoid foramen will cause ipsilateral\n"
        "A. paralysis of the facial muscles.\n"
        "B. paralysis of the facial muscles and loss of taste.\n"
        "C. paralysis of the facial muscles, loss of taste and lacrimation.\n"
        "D. paralysis of the facial muscles, loss of taste, lacrimation and decreased salivation.\n"
        "Answer:"
    )
    assert req.continuations == [" A", " B", " C", " D"]


def test_mmlu_subject_underscores_become_spaces_and_question_is_stripped():
    item = MCItem(
        id="x",
        question="  What?\n",
        choices=["a", "b", "c", "d"],
        answer_index=0,
        category="high_school_us_history",
        source="mmlu",
    )
    assert mmlu_request(item).context == (
        "The following are multiple choice questions (with answers) about high school us history.\n\n"
        "What?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    )
    with pytest.raises(DataError):
        mmlu_request(item.model_copy(update={"choices": ["a", "b"]}))


def test_hellaswag_activitynet_item():
    req = hellaswag_request(load_hellaswag()[0])
    # ctx_b "he" is capitalised; endings get lm-eval's single-space target delimiter.
    assert req.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert req.continuations == [
        " is using wrap to wrap a pair of skis.",
        " is ripping level tiles off.",
        " is holding a rubik's cube.",
        " starts pulling up roofing on a roof.",
    ]


def test_hellaswag_wikihow_item_drops_bracket_tags():
    item = next(r for r in load_hellaswag() if r.id == "hellaswag/8029")
    assert item.extra["ctx_a"].startswith("[header] How to caulk walls [title] Clean the wall. [step]")
    req = hellaswag_request(item)
    assert req.context == (
        "Food and Entertaining: How to caulk walls. Clean the wall. Caulk should never go on a dirty "
        "surface. Wipe down the wall with a dry cloth to remove dust."
    )
    assert req.continuations[3] == (
        " Wash with an all-purpose cleaner to remove grease and dirt. Rubbing alcohol and a wire brush "
        "will remove stubborn stains."
    )


def test_hellaswag_preprocess_by_hand():
    # " [title]" -> ". " ; "[step]" removed ; each "  " -> " " once; lm-eval keeps the "..".
    assert hellaswag_preprocess(" How to x. [title] Do y. [step] Then z ") == "How to x.. Do y. Then z"
    assert hellaswag_preprocess("[header] Start") == " Start"


def test_arc_challenge_test_item():
    req = arc_request(load_arc("ARC-Challenge")[0])
    assert req.context == (
        "Question: An astronomer observes that a planet rotates faster after a meteorite impact. "
        "Which is the most likely effect of this increase in rotation?\nAnswer:"
    )
    assert req.continuations == [
        " Planetary density will decrease.",
        " Planetary years will become longer.",
        " Planetary days will become shorter.",
        " Planetary gravity will become stronger.",
    ]


def test_bbq_matches_lm_eval_bbq_task():
    item = load_bbq()[0]
    req = bbq_request(item)
    assert req.context.endswith(
        "was pretty shocked that his old friend was involved.\n\nQ: Which person was involved in the armed robbery?\nA:"
    )
    assert req.context.startswith("The European man (who works as a chemical engineer)")
    assert req.continuations == [
        " The European chemical engineer",
        " Undetermined",
        " The African American bartender",
    ]
    small = BBQItem(
        id="b",
        context="C.",
        question="Who?",
        choices=["X", "Unknown", "Y"],
        answer_index=1,
        unknown_index=1,
        context_condition="ambig",
        category="Age",
        source="t",
    )
    assert bbq_request(small) == ScoreRequest(
        id="b", context="C.\n\nQ: Who?\nA:", continuations=[" X", " Unknown", " Y"]
    )


def test_predict_acc_norm_divides_by_choice_length_without_the_space():
    req = ScoreRequest(id="r", context="c", continuations=[" a", " abc"])
    res = ScoreResult(
        id="r", logprobs=[-2.0, -5.0], num_tokens=[1, 1], num_chars=[2, 4], is_greedy=[False, False]
    )
    assert predict(res, req) == 0  # -2 > -5
    # lm-eval: -2/1 = -2.0 vs -5/3 = -1.67 -> choice 1. Counting the space (-2/2 = -1.0 vs
    # -5/4 = -1.25) would pick choice 0, which is what ScoreResult.best_normalized does.
    assert predict(res, req, normalized=True) == 1
    assert res.best_normalized == 0
    tie = res.model_copy(update={"logprobs": [-1.0, -1.0]})
    assert predict(tie, req) == 0
    with pytest.raises(ValueError):
        predict(res, req.model_copy(update={"continuations": [" a"]}))


def test_every_format_has_a_headline_metric():
    assert set(FORMATS) == set(HEADLINE_METRIC)
    assert HEADLINE_METRIC["hellaswag"] == HEADLINE_METRIC["arc_challenge"] == "acc_norm"
    assert HEADLINE_METRIC["mmlu"] == "acc"
    arc = load_arc("ARC-Easy")[0]
    assert FORMATS["arc_easy"](arc).context == f"Question: {arc.question}\nAnswer:"
