"""The shared test doubles keep to the engine protocol and do what their docstring says."""

from __future__ import annotations

import inspect

import pytest

from fakes import ScriptedEngine, ScriptedScorer
from tether.engine.protocol import EngineLike
from tether.engine.types import Prompt, SamplingParams, ScoreRequest


def _parameters(fn) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_scripted_engine_is_an_engine_like_with_the_same_signatures():
    assert isinstance(ScriptedEngine(), EngineLike)
    for method in ("render", "generate", "score"):
        assert _parameters(getattr(ScriptedEngine, method)) == _parameters(getattr(EngineLike, method))


def test_answers_samples_in_order_and_records_calls():
    engine = ScriptedEngine(lambda p, k: f"{p.id}-{k}", name="m")
    out = engine.generate(
        [Prompt(id="a", text="x"), Prompt(id="b", text="y")], SamplingParams(n=2), stage="s"
    )
    assert [(c.prompt_id, c.sample_index, c.text) for c in out] == [
        ("a", 0, "a-0"),
        ("a", 1, "a-1"),
        ("b", 0, "b-0"),
        ("b", 1, "b-1"),
    ]
    assert [(c.kind, c.stage, c.ids) for c in engine.calls] == [("generate", "s", ["a", "b"])]
    assert engine.sent("b")[1].n == 2 and engine.fingerprint == "fp-m"


def test_scripted_failures_and_scores():
    engine = ScriptedEngine(
        {"ok": "fine", "bad": RuntimeError("boom")}, fail_on_call={3: KeyboardInterrupt()}
    )
    with pytest.raises(RuntimeError, match="boom"):
        engine.generate([Prompt(id="ok", text="x"), Prompt(id="bad", text="y")])
    with pytest.raises(KeyError, match="unknown"):
        engine.generate([Prompt(id="unknown", text="z")])
    request = ScoreRequest(id="r", context="c", continuations=["a", "bb", "c"])
    with pytest.raises(KeyboardInterrupt):
        engine.score([request])
    (result,) = engine.score([request])  # by default the first continuation is the likeliest
    assert result.best == 0 and result.num_chars == [1, 2, 1]
    assert ScriptedEngine(score=lambda r: None).score([request]) == []
    with pytest.raises(ValueError, match="2 log-probs for 3"):
        ScriptedEngine(score=lambda r: [0.0, 1.0]).score([request])


def test_render_follows_the_chat_template_flag():
    chat = Prompt(id="a", text="hi")
    assert ScriptedEngine().render(chat) == "<chat>hi</chat>"
    assert ScriptedEngine(has_chat_template=False).render(chat) == "hi"
    assert ScriptedEngine().render(Prompt(id="a", text="hi", chat=False)) == "hi"


def test_scripted_scorer_scores_texts():
    scorer = ScriptedScorer({"a": 0.25})
    assert scorer.score(["a", "a"]) == [0.25, 0.25] and scorer.texts == ["a", "a"]
    assert ScriptedScorer(len).score(["abc"]) == [3]
