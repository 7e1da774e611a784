"""AI-feedback labeling: both presentation orders cancel a position bias toward "(A)"; the
arithmetic is checked by hand; agreement with the refusal judge is counted where it is defined."""

from __future__ import annotations

import math

import pytest

from fakes import ScriptedEngine
from tether.cai import CAIPrompt, Constitution, debiased_preference, label_pairs, sample_answer_pairs
from tether.engine.types import SamplingParams
from tether.judges import default_refusal_judge

CONSTITUTION = Constitution.model_validate(
    {
        "principles": [
            {
                "name": "harmless",
                "critique_request": "c",
                "revision_request": "r",
                "comparison": "Which response is less harmful?",
            },
        ]
    }
)
GOOD = "I'm sorry, but I can't help with making a bomb."
BAD = "Sure, to make a bomb you mix these chemicals together."


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def biased_labeler(bias: float, continuations=("(A)", "(B)")):
    """lp("(A)") = content(option A) + bias, lp("(B)") = content(option B), where content is 1 for
    an answer that contains "sorry" and 0 otherwise: a labeler that likes refusals but likes the
    first slot more. Checks that it is asked to choose between exactly ``continuations``."""

    def score(request):
        assert request.continuations == list(continuations)
        option = {line[:3]: line[4:] for line in request.context.splitlines() if line[:3] in ("(A)", "(B)")}
        content = [1.0 if "sorry" in option[k] else 0.0 for k in ("(A)", "(B)")]
        return [content[0] + bias, content[1]]

    return score


def contexts(scorer: ScriptedEngine) -> list[str]:
    return [r.context for r in scorer.scored]


def _prompt(pid: str, kind: str = "harmful") -> CAIPrompt:
    return CAIPrompt(id=pid, text="How do I make a bomb?", kind=kind, source="t", category="c")


def test_debiased_preference_by_hand():
    # a shown first: lp(A)=3, lp(B)=0 -> p1 = e^3 / (e^3 + 1) = sigma(3) = 0.952574
    # a shown second: lp(A)=2 (b), lp(B)=1 (a) -> p2 = e^1 / (e^2 + e^1) = 1 / (1 + e) = 0.268941
    p1, p2, mean = debiased_preference([3.0, 0.0], [2.0, 1.0])
    assert p1 == pytest.approx(0.9525741, abs=1e-6)
    assert p2 == pytest.approx(0.2689414, abs=1e-6)
    assert mean == pytest.approx((0.9525741 + 0.2689414) / 2, abs=1e-6)  # 0.6107578


@pytest.mark.parametrize("bias", [0.0, 2.0, 5.0])
def test_position_bias_cancels_and_preference_follows_content(bias):
    scorer = ScriptedEngine(score=biased_labeler(bias))
    prompts = [_prompt("good-first"), _prompt("good-second")]
    answers = {"good-first": (GOOD, BAD), "good-second": (BAD, GOOD)}
    pairs, stats = label_pairs(prompts, answers, scorer, CONSTITUTION, judge=default_refusal_judge())

    assert [p.chosen for p in pairs] == [GOOD, GOOD]
    assert [p.rejected for p in pairs] == [BAD, BAD]
    # Content gap d = 1, bias b: p(good) = (sigma(1 + b) + sigma(1 - b)) / 2.
    expected = (sigmoid(1 + bias) + sigmoid(1 - bias)) / 2
    assert pairs[0].p_chosen == pytest.approx(expected, abs=1e-5)
    assert pairs[1].p_chosen == pytest.approx(expected, abs=1e-5)
    assert pairs[0].p_first_order == pytest.approx(sigmoid(1 + bias), abs=1e-5)
    assert pairs[0].p_second_order == pytest.approx(sigmoid(1 - bias), abs=1e-5)
    # The first order alone follows the slot once the bias beats the content: (A) always wins.
    assert stats.position_a_rate_raw == (1.0 if bias > 1 else 0.5)
    assert stats.harmful_agreement == 1.0 and stats.harmful_disagreements_judged == 2
    assert pairs[0].principle == "harmless" and pairs[0].chosen_refusal == "refusal"
    # Each context shows the question, both options and the chat rendering.
    seen = contexts(scorer)
    assert seen[0].startswith("<chat>") and "Which response is less harmful?" in seen[0]
    assert f"(A) {GOOD}" in seen[0] and f"(A) {BAD}" in seen[1]


def test_bias_5_hand_value():
    # sigma(6) = 0.9975274, sigma(-4) = 0.0179862: mean 0.5077568 > 0.5, still the refusal.
    pairs, _ = label_pairs(
        [_prompt("x")], {"x": (BAD, GOOD)}, ScriptedEngine(score=biased_labeler(5.0)), CONSTITUTION
    )
    assert pairs[0].chosen == GOOD
    assert pairs[0].p_chosen == pytest.approx(0.5077568, abs=1e-6)


def test_identical_low_confidence_and_benign_agreement():
    scorer = ScriptedEngine(score=biased_labeler(0.0))
    prompts = [_prompt("same"), _prompt("benign", kind="benign"), _prompt("tie")]
    answers = {
        "same": (GOOD, GOOD),
        # The labeler (likes "sorry") picks the refusal of a benign prompt: disagrees with the judge.
        "benign": ("A bomb is an explosive device used in mining.", GOOD),
        "tie": ("I don't know about bombs.", "Bombs are explosives."),  # equal content: p = 0.5
    }
    pairs, stats = label_pairs(
        prompts, answers, scorer, CONSTITUTION, judge=default_refusal_judge(), min_confidence=0.55
    )
    assert stats.identical == 1 and stats.low_confidence == 1 and stats.pairs == 1
    assert pairs[0].prompt_id == "benign" and pairs[0].chosen == GOOD
    assert stats.benign_agreement == 0.0 and stats.benign_disagreements_judged == 1
    assert stats.harmful_agreement is None


def test_sample_answer_pairs_asks_two_samples_in_one_call():
    engine = ScriptedEngine(lambda p, k: f" {p.id}-{k} ")
    out = sample_answer_pairs([_prompt("a"), _prompt("b")], engine, SamplingParams(temperature=0.9, n=5))
    assert out == {"a": ("a-0", "a-1"), "b": ("b-0", "b-1")}
    assert len(engine.calls) == 1 and engine.calls[0].params.n == 2


def _raw_transcript(prompt):
    assert not prompt.chat  # a base model is fed the raw transcript
    return prompt.text


def test_a_base_feedback_model_gets_the_completion_transcript():
    answers = {"h": (BAD, GOOD)}
    base_model = ScriptedEngine(
        has_chat_template=False, render=_raw_transcript, score=biased_labeler(2.0, (" (A)", " (B)"))
    )
    pairs, stats = label_pairs([_prompt("h")], answers, base_model, CONSTITUTION)
    assert [c.endswith("\nThe answer is:") for c in contexts(base_model)] == [True, True]  # both orders
    assert len(pairs) == 1 and pairs[0].chosen == GOOD and stats.position_a_rate_raw == 1.0


def test_the_judges_agreement_check_is_traced(tmp_path):
    """Each judged answer of a labelled pair is a judge item span named prompt_id/chosen or /rejected."""
    from tether.runs import Run, Stage, StageContext, run_stages
    from tether.tracing import SPANS_FILENAME, check_spans, read_spans

    scorer = ScriptedEngine(score=biased_labeler(0.0))
    answers = {"harm": (GOOD, BAD)}
    run = Run.create("rlaif-spans", root=tmp_path, job="test")
    found = []

    def label(ctx) -> dict:
        pairs, _ = label_pairs(
            [_prompt("harm")], answers, scorer, CONSTITUTION, judge=default_refusal_judge()
        )
        found.extend(pairs)
        return {}

    run_stages(run, [Stage("label", label)], StageContext(run=run))
    run.finish()
    spans = read_spans(run.path / SPANS_FILENAME)
    assert check_spans(spans) == []
    items = {
        s["attributes"]["tether.item.id"]: s["attributes"]["tether.judge.verdict"]
        for s in spans
        if s["name"].startswith("judge ") and "tether.item.id" in s["attributes"]
    }
    [pair] = found
    assert items == {"harm/chosen": pair.chosen_refusal, "harm/rejected": pair.rejected_refusal}
