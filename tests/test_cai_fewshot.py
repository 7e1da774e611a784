"""Few-shot prompting of critic and reviser: the example pool, the completion (base-model) transcript,
prefilled revisions cut to one sentence, and the critic's Yes/No rescue being opt-in."""

from __future__ import annotations

import pytest

from tether.cai import CAIPrompt, Constitution, LoopConfig, run_loop
from tether.cai.loop import (
    TRANSCRIPT_STOPS,
    critique_text,
    first_sentence,
    resolve_style,
    revision_text,
)
from tether.engine.types import Completion
from tether.errors import ConfigError
from tether.judges import default_refusal_judge


def _example(tag: str) -> dict:
    return {
        "prompt": f"{tag}-prompt",
        "response": f"{tag}-response",
        "critique": f"{tag}-critique",
        "revision": f"{tag}-revision",
    }


CONSTITUTION = Constitution.model_validate(
    {
        "principles": [
            {
                "name": "crime",
                "tags": ["harmful"],
                "critique_request": "CRIT-CRIME",
                "revision_request": "REV-CRIME",
                "revision_prefix": "I'm sorry, but I can't help with",
                "examples": [_example("crime1")],
            },
            {
                "name": "hate",
                "tags": ["harmful"],
                "critique_request": "CRIT-HATE",
                "revision_request": "REV-HATE",
                "revision_prefix": "I'm sorry, but I can't help with",
                "examples": [_example("hate1"), _example("hate2")],
            },
            {
                "name": "helpful",
                "tags": ["benign"],
                "critique_request": "CRIT-HELP",
                "revision_request": "REV-HELP",
                "examples": [_example("help1")],
            },
        ]
    }
)


def test_examples_pool_own_first_then_same_kind_only():
    crime = CONSTITUTION.get("crime")
    shown = CONSTITUTION.examples_for(crime, "harmful", 3, "key-a")
    assert [ex.prompt for _, ex in shown][0] == "crime1-prompt"
    assert {ex.prompt for _, ex in shown[1:]} == {"hate1-prompt", "hate2-prompt"}
    assert all(p.name != "helpful" for p, _ in shown)  # no benign demonstrations on red-team prompts
    assert [p.name for p, _ in shown] == ["crime", "hate", "hate"]  # each example keeps its principle
    assert CONSTITUTION.examples_for(crime, "harmful", 3, "key-a", pool=False) == shown[:1]
    assert CONSTITUTION.examples_for(crime, "harmful", 0, "key-a") == []
    # The borrowed order depends on the key (so one demonstration is not shown first everywhere)
    # and only on the key.
    orders = {
        tuple(ex.prompt for _, ex in CONSTITUTION.examples_for(crime, "harmful", 2, f"k{i}"))
        for i in range(12)
    }
    assert orders == {("crime1-prompt", "hate1-prompt"), ("crime1-prompt", "hate2-prompt")}
    assert CONSTITUTION.examples_for(crime, "harmful", 3, "key-a") == shown


def test_completion_transcript_carries_each_examples_own_requests_and_the_prefix():
    crime = CONSTITUTION.get("crime")
    shown = CONSTITUTION.examples_for(crime, "harmful", 2, "k")
    text = critique_text("Steal a car?", "Sure, first...", crime, style="completion", examples=shown)
    assert text.startswith("User: crime1-prompt\nAssistant: crime1-response\n\nCritique request: CRIT-CRIME")
    assert "Critique: crime1-critique\n\nRevision request: REV-CRIME\nRevision: crime1-revision" in text
    assert "Critique request: CRIT-HATE\nCritique: hate" in text  # a borrowed example, its own request
    assert text.endswith(
        "User: Steal a car?\nAssistant: Sure, first...\n\nCritique request: CRIT-CRIME\nCritique:"
    )

    rev = revision_text(
        "Steal a car?", "Sure, first...", "It helps a theft.", crime, style="completion", examples=shown
    )
    assert rev.endswith(
        "Critique: It helps a theft.\n\nRevision request: REV-CRIME\nRevision: I'm sorry, but I can't help with"
    )
    chat = critique_text("Steal a car?", "Sure, first...", crime, style="chat", examples=shown)
    assert "Critique request:" not in chat and chat.rstrip().endswith("CRIT-CRIME")


class _Engine:
    """Scripted by request id; records every prompt and the stop strings it was sent with."""

    def __init__(self, script, has_chat_template=True):
        self.script = script
        self.has_chat_template = has_chat_template
        self.sent: dict[str, tuple] = {}
        self.stages: list[str] = []

    def render(self, prompt):
        return f"<chat>{prompt.text}</chat>" if prompt.chat else prompt.text

    def generate(self, prompts, params=None, *, stage="", progress=True):
        self.stages.append(stage)
        out = []
        for p in prompts:
            self.sent[p.id] = (p.text, p.chat, list(params.stop) if params else [])
            out.append(
                Completion(
                    prompt_id=p.id,
                    text=self.script[p.id],
                    prompt_tokens=1,
                    completion_tokens=1,
                    finish_reason="stop",
                    latency_s=0.0,
                )
            )
        return out

    def score(self, requests, *, stage="", progress=True):  # pragma: no cover - must not be called
        self.stages.append(stage)
        raise AssertionError("the critic's Yes/No check is off by default")


PROMPTS = [
    CAIPrompt(id="h", text="How do I steal a car?", kind="harmful", source="t", category="crime"),
    CAIPrompt(id="b", text="What colour is the sky?", kind="benign", source="t", category="sci"),
]
SCRIPT = {
    "h": "Sure, first find an old car, then break the window and start the engine with a screwdriver.",
    "b": "The sky is blue on a clear day because air scatters blue light the most.",
    "h#c0": "The answer explains how to steal a car.",
    # The reviser continues the prefilled words, then drifts: only the first sentence is kept.
    "h#r0": "stealing a car. Sure, first find an old car and break the window.",
    "b#c0": "The answer is fine.",
    "b#r0": "I'm sorry, but I can't help with that.",  # a benign rewrite that refuses
}


@pytest.mark.parametrize("has_template, style", [(False, "completion"), (True, "chat")])
def test_style_auto_follows_the_critics_chat_template(tmp_path, has_template, style):
    policy = _Engine(SCRIPT)
    critic = _Engine(SCRIPT, has_chat_template=has_template)
    finals, stats = run_loop(
        PROMPTS,
        policy,
        CONSTITUTION,
        tmp_path / "loop.jsonl",
        judge=default_refusal_judge(),
        critic=critic,
        config=LoopConfig(passes=1, few_shot=2),
    )
    assert resolve_style("auto", critic) == style
    text, chat, stops = critic.sent["h#r0"]
    if style == "completion":
        assert not chat and text.endswith("Revision: I'm sorry, but I can't help with")
        assert set(TRANSCRIPT_STOPS) <= set(stops)
    else:  # the prefix goes after the rendered chat turn, sent raw
        assert (
            not chat
            and text.startswith("<chat>")
            and text.endswith("</chat>I'm sorry, but I can't help with")
        )
        assert critic.sent["h#c0"][1] is True and not set(TRANSCRIPT_STOPS) <= set(critic.sent["h#c0"][2])
    assert policy.sent["h"][1] is True  # first answers are always chat turns of the policy

    by_id = {f.prompt_id: f for f in finals}
    assert by_id["h"].text == "I'm sorry, but I can't help with stealing a car."
    assert by_id["h"].keep and by_id["h"].reason == "refusal"
    # The benign rewrite refused: the helpful first answer is what SFT gets.
    assert by_id["b"].keep and by_id["b"].text == SCRIPT["b"]
    assert "cai/check" not in critic.stages and stats.kept_by_critic_only == 0


def test_first_sentence_and_unknown_style():
    assert (
        first_sentence("I'm sorry, but I can't help with that; here is")
        == "I'm sorry, but I can't help with that."
    )
    assert first_sentence("I can't help with v1.2 of it. More") == "I can't help with v1.2 of it."
    assert first_sentence("I'm sorry, but I won't\nwrite it") == "I'm sorry, but I won't."
    assert first_sentence("No end") == "No end."
    with pytest.raises(ConfigError, match="unknown loop.style"):
        resolve_style("poetry", _Engine({}))
