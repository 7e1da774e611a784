"""Prompt formats match lm-evaluation-harness character for character (hand-checked items)."""

from __future__ import annotations

import pytest

from tether.data.records import BBQItem, MCItem
from tether.data.sources import (
    load_arc,
    load_bbq,
    load_boolq_questions,
    load_hellaswag,
    load_mmlu,
    load_openbookqa,
    load_piqa,
    load_sciq,
    load_social_iqa,
    load_winogrande,
)
from tether.engine.types import ScoreRequest, ScoreResult
from tether.errors import DataError
from tether.evals.formats import (
    FORMATS,
    HEADLINE_METRIC,
    arc_request,
    bbq_request,
    boolq_request,
    hellaswag_preprocess,
    hellaswag_request,
    mmlu_request,
    openbookqa_request,
    piqa_request,
    predict,
    sciq_request,
    social_iqa_request,
    winogrande_requests,
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


# --- commonsense and science sets (lm-eval's YAMLs, hand-checked on the first item) ----------------


def test_piqa_question_answer_layout():
    req = piqa_request(load_piqa()[0])
    assert req.context == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert req.continuations[0].startswith(" Provide the guinea pig with a cage full of a few inches")
    assert len(req.continuations) == 2


def test_winogrande_partial_scoring_one_context_per_option():
    reqs = winogrande_requests(load_winogrande()[0])
    assert [r.context for r in reqs] == [
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria",
    ]
    assert [r.continuations for r in reqs] == [[" always got the easier cases."]] * 2
    assert [r.id for r in reqs] == ["winogrande/0#0", "winogrande/0#1"]
    with pytest.raises(DataError):
        winogrande_requests(MCItem(id="w", question="no blank", choices=["a", "b"], answer_index=0,
                                   category="c", source="t"))  # fmt: skip


def test_sciq_support_then_question_and_empty_support_keeps_the_newline():
    item = load_sciq()[0]
    req = sciq_request(item)
    assert req.context == "\nQuestion: Who proposed the theory of evolution by natural selection?\nAnswer:"
    assert req.continuations == [" Linnaeus", " shaw", " Scopes", " darwin"]
    with_support = item.model_copy(update={"extra": {"support": "  Darwin did.\n"}})
    assert sciq_request(with_support).context.startswith("Darwin did.\n\nQuestion: Who proposed")


def test_openbookqa_is_the_bare_stem():
    req = openbookqa_request(load_openbookqa()[0])
    assert req.context.startswith("A person wants to start saving money") and req.context.endswith("is to")
    assert req.continuations[1] == " quit eating lunch out"


def test_boolq_passage_question_mark_answer():
    req = boolq_request(load_boolq_questions()[0])
    assert req.context.startswith("Ethanol fuel -- All biomass goes through")
    assert req.context.endswith(
        "producing gasoline.\nQuestion: does ethanol take more energy make that produces?\nAnswer:"
    )
    assert req.continuations == [" no", " yes"]


def test_social_iqa_q_a_layout():
    req = social_iqa_request(load_social_iqa()[0])
    assert req.context == (
        "Q: Tracy didn't go home that evening and resisted Riley's attacks. "
        "What does Tracy need to do before this?\nA:"
    )
    assert req.continuations == [" make a new plan", " Go home and see Riley", " Find somewhere to go"]
