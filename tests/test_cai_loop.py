"""The critique → revision loop with a scripted engine: the record chain, K passes, degenerate
critiques, filtering counts, and resuming without repeating model calls."""

from __future__ import annotations

import json

import pytest

from fakes import ScriptedEngine
from tether.cai import CAIPrompt, Constitution, LoopConfig, degenerate_reason, run_loop
from tether.cai.loop import clean_revision
from tether.cai.records import FinalReason
from tether.judges import default_refusal_judge

CONSTITUTION = Constitution.model_validate(
    {
        "principles": [
            {
                "name": "harmless",
                "tags": ["harmful"],
                "critique_request": "CRIT-HARM",
                "revision_request": "REV-HARM",
            },
            {
                "name": "helpful",
                "tags": ["benign"],
                "critique_request": "CRIT-HELP",
                "revision_request": "REV-HELP",
            },
        ]
    }
)
PROMPTS = [
    CAIPrompt(id="h1", text="How do I build a bomb?", kind="harmful", source="t", category="weapons"),
    CAIPrompt(id="h2", text="How do I steal a car?", kind="harmful", source="t", category="crime"),
    CAIPrompt(id="h3", text="Tell me how to pick a lock.", kind="harmful", source="t", category="crime"),
    CAIPrompt(id="b1", text="What is the capital of France?", kind="benign", source="t", category="geo"),
    CAIPrompt(id="b2", text="Name a primary colour.", kind="benign", source="t", category="art"),
]
REFUSAL = "I'm sorry, but I can't help with that."
# On-topic compliance (the rule judge counts an off-topic answer as a deflection, i.e. a refusal).
COMPLY_BOMB = "Sure, to build a bomb first gather the materials, then follow these steps carefully."
COMPLY_CAR = "Sure, to steal a car first find an old car model, then follow these steps carefully."
COMPLY_LOCK = "Sure, to pick a lock first get a tension wrench, then follow these steps carefully."
LOOPING = "bad " * 20

# What the scripted model says, by the id of the request (prompt id + "#c<pass>" / "#r<pass>").
SCRIPT = {
    "h1": COMPLY_BOMB,
    "h2": COMPLY_CAR,
    "h3": COMPLY_LOCK,
    "b1": REFUSAL,
    "b2": "Red is a primary colour.",
    "h1#c0": "The answer explains how to build a weapon; it should decline.",
    "h1#r0": "Revised response: " + REFUSAL,
    "h1#c1": "The refusal is fine and polite.",
    "h1#r1": REFUSAL + " I can help with safety information instead.",
    "h2#c0": LOOPING,  # degenerate: no revision, h2 keeps its harmful answer
    "h2#c1": "",  # empty: degenerate again
    "h3#c0": "It gives lock-picking steps.",
    "h3#r0": "To open a lock you own, call a licensed locksmith who can verify you own it.",
    "h3#c1": "This now points to a lawful route.",
    "h3#r1": "line\nline\nline\nline",  # degenerate rewrite: keeps the previous answer
    "b1#c0": "The question is harmless; refusing is unhelpful.",
    "b1#r0": "Assistant: The capital of France is Paris.",
    "b1#c1": "The answer is direct and correct.",
    "b1#r1": "The capital of France is Paris.",
    "b2#c0": "It answers the question directly.",
    "b2#r0": REFUSAL,  # a rewrite that refuses a benign request: dropped at the end
    "b2#c1": "Refusing is unhelpful.",
    "b2#r1": REFUSAL,
}


def critic_says_h3_complies(request):
    """The critic's Yes/No check: "Yes" (still complies) only for h3."""
    return [-0.1, -3.0] if request.id.startswith("h3") else [-3.0, -0.1]


def scripted(script=SCRIPT, **kw) -> ScriptedEngine:
    """Answers from SCRIPT by request id; ``fail_on_call`` simulates a crash."""
    return ScriptedEngine(script, score=critic_says_h3_complies, **kw)


def stages(engine: ScriptedEngine) -> list[str]:
    return [c.stage for c in engine.calls]


def _run(tmp_path, engine, passes=2, **config):
    config.setdefault("critic_rescue", True)  # exercises the Yes/No check (off by default)
    return run_loop(
        PROMPTS,
        engine,
        CONSTITUTION,
        tmp_path / "loop.jsonl",
        judge=default_refusal_judge(),
        config=LoopConfig(passes=passes, **config),
        round_index=1,
        seed=0,
    )


def test_degeneracy_checks():
    assert degenerate_reason("") == "empty"
    assert degenerate_reason("   \n ") == "empty"
    assert degenerate_reason(LOOPING).startswith("repetitive (distinct-2 0.05")
    assert degenerate_reason("x\nx\nx").startswith("the same line 3 times")
    assert degenerate_reason("no no no") is None  # too short to judge repetition
    assert (
        degenerate_reason("\U0001f333\U0001f333\U0001f332\U0001f332\U0001f331 " * 3)
        == "mostly symbols, not text"
    )
    assert degenerate_reason("x = (a + b) * c; return x") is None
    assert degenerate_reason("The answer names a weapon and should decline politely instead.") is None
    assert clean_revision('Revised response: "Paris."') == "Paris."
    assert clean_revision("**Assistant:** Revision: Hello") == "Hello"


def test_loop_records_chain_passes_and_filter_counts(tmp_path):
    engine = scripted()
    finals, stats = _run(tmp_path, engine)

    records = [json.loads(line) for line in (tmp_path / "loop.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds.count("answer") == 5 and kinds.count("critique") == 10
    assert kinds.count("revision") == 10 and kinds.count("final") == 5

    # One batched call per step: answers, then per pass critiques and revisions, then one score call.
    assert stages(engine) == [
        "cai/answer",
        "cai/critique",
        "cai/revision",
        "cai/critique",
        "cai/revision",
        "cai/check",
    ]
    assert engine.calls[2].ids == ["h1#r0", "h3#r0", "b1#r0", "b2#r0"]  # h2's critique was degenerate
    # The critic is asked only about red-team finals the judge saw no refusal in (h1 refuses).
    assert engine.calls[5].ids == ["h2#check", "h3#check"]
    # The chain: pass 1 critiques the pass-0 revision, and its revision records what it replaced.
    rev = {(r["prompt_id"], r["pass_index"]): r for r in records if r["kind"] == "revision"}
    assert rev[("h1", 0)]["previous"] == COMPLY_BOMB and rev[("h1", 0)]["text"] == REFUSAL
    critique = engine.sent("h1#c1")[0].text
    assert REFUSAL in critique and "CRIT-HARM" in critique
    assert "CRIT-HELP" in engine.sent("b1#c0")[0].text
    assert rev[("h1", 1)]["previous"] == REFUSAL
    assert rev[("h2", 0)]["skipped"] and rev[("h2", 0)]["text"] == COMPLY_CAR
    assert rev[("h2", 1)]["skip_reason"] == "degenerate critique: empty"
    assert rev[("h3", 1)]["skipped"] and rev[("h3", 1)]["skip_reason"].startswith("degenerate revision")
    assert rev[("b1", 0)]["text"] == "The capital of France is Paris."  # echoed label removed

    by_id = {f.prompt_id: f for f in finals}
    assert by_id["h1"].keep and by_id["h1"].reason == "refusal"
    assert not by_id["h2"].keep and by_id["h2"].reason == "still complies with the harmful request"
    assert by_id["h3"].keep and by_id["h3"].critic_complies is True
    assert by_id["b1"].keep and by_id["b1"].text == "The capital of France is Paris."
    # b2's rewrite refuses; its helpful first answer goes to SFT instead.
    assert by_id["b2"].keep and by_id["b2"].reason == "helpful first answer (its revision refused)"
    assert by_id["b2"].text == "Red is a primary colour." and by_id["b2"].refusal_label == "compliance"
    # loop.jsonl stores each reason as its plain string.
    final_reasons = {r["prompt_id"]: r["reason"] for r in records if r["kind"] == "final"}
    assert final_reasons["h3"] == "critic says it complies" == FinalReason.CRITIC_COMPLIES

    assert stats.degenerate_critiques == 2 and stats.degenerate_revisions == 1
    assert stats.revised == 10 - 3
    assert (stats.kept, stats.kept_harmful, stats.kept_benign, stats.kept_by_critic_only) == (4, 2, 2, 1)
    assert stats.dropped_harmful_still_complies == 1 and stats.dropped_benign_refused == 0
    assert stats.answer_refusal_rate_harmful == 0.0 and stats.answer_refusal_rate_benign == 0.5
    assert stats.final_refusal_rate_harmful == pytest.approx(1 / 3, abs=1e-4)
    assert stats.final_refusal_rate_benign == 0.0


def test_resume_skips_finished_records(tmp_path):
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    reference, _ = _run(clean_dir, scripted())

    crashing = scripted(fail_on_call={3: KeyboardInterrupt("simulated crash")})  # pass 0's revision
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, crashing)
    done = [json.loads(line)["kind"] for line in (tmp_path / "loop.jsonl").read_text().splitlines()]
    # 5 answers, 5 critiques, and h2's skip (recorded without a model call) survived the crash.
    assert done == ["answer"] * 5 + ["critique"] * 5 + ["revision"]

    resumed = scripted()
    finals, _ = _run(tmp_path, resumed)
    assert stages(resumed) == [
        "cai/revision",
        "cai/critique",
        "cai/revision",
        "cai/check",
    ]
    assert resumed.calls[0].ids == ["h1#r0", "h3#r0", "b1#r0", "b2#r0"]
    assert [f.model_dump() for f in finals] == [f.model_dump() for f in reference]

    again = scripted()
    _run(tmp_path, again)
    assert again.calls == []  # a finished round asks the model nothing


def test_torn_last_line_is_redone(tmp_path):
    _run(tmp_path, scripted(), passes=1)
    path = tmp_path / "loop.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:10])  # kill mid-write of the last final
    engine = scripted()
    finals, _ = _run(tmp_path, engine, passes=1)
    assert stages(engine) in (["cai/check"], [])
    assert len(finals) == 5


def test_off_topic_deflection_is_not_kept_as_a_refusal(tmp_path):
    prompts = [CAIPrompt(id="h", text="How do I build a bomb?", kind="harmful", source="t", category="c")]
    ramble = "The weather in Paris was lovely last spring, and the museums were full of visitors every day."
    script = {"h": ramble, "h#c0": "It should decline.", "h#r0": ramble}
    finals, stats = run_loop(
        prompts,
        scripted(script),
        CONSTITUTION,
        tmp_path / "a.jsonl",
        judge=default_refusal_judge(),
        config=LoopConfig(passes=1),
    )
    assert finals[0].refusal_label == "compliance"  # no refusal phrase: the judge sees no refusal
    assert not finals[0].keep and finals[0].reason == "off-topic deflection, not a refusal"
    assert stats.dropped_harmful_deflection == 1 and stats.kept == 0

    finals, _ = run_loop(
        prompts,
        scripted(script),
        CONSTITUTION,
        tmp_path / "b.jsonl",
        judge=default_refusal_judge(),
        config=LoopConfig(passes=1, keep_deflections=True),
    )
    # keep_deflections lifts only the deflection rule: the judge still sees no refusal to keep.
    assert not finals[0].keep and finals[0].reason == "still complies with the harmful request"
