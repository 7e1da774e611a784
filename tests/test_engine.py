"""Engine behaviour on a tiny random Llama: batching must not change results."""

from __future__ import annotations

import pytest
import torch

from tether.config import EngineConfig
from tether.engine import Engine, Prompt, PromptTooLongError, SamplingParams, ScoreRequest
from tether.models import load


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(load(str(tiny_model_dir)), EngineConfig(batch_size=4, score_batch_size=3))


PROMPTS = [
    Prompt(id="a", text="Hello there"),
    Prompt(id="b", text="A much longer prompt that needs padding when batched with short ones"),
    Prompt(id="c", text="Why?"),
    Prompt(id="d", text="Count to five please", chat=False),
    Prompt(id="e", text="Summarise the following text: the cat sat on the mat."),
]


def test_batched_greedy_equals_one_by_one(engine):
    params = SamplingParams(max_new_tokens=12)
    batched = engine.generate(PROMPTS, params, progress=False)
    single = [engine.generate([p], params, progress=False)[0] for p in PROMPTS]
    assert [c.prompt_id for c in batched] == [p.id for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.completion_tokens > 0 for c in batched)


def test_sampling_is_seeded_and_n_samples(engine):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=7)
    first = engine.generate(PROMPTS[:2], params, progress=False)
    again = engine.generate(PROMPTS[:2], params, progress=False)
    other = engine.generate(PROMPTS[:2], params.model_copy(update={"seed": 8}), progress=False)
    assert len(first) == 6
    assert [c.sample_index for c in first] == [0, 1, 2, 0, 1, 2]
    assert [c.text for c in first] == [c.text for c in again]
    assert [c.text for c in first] != [c.text for c in other]


def test_stop_string_cuts_text(engine):
    free = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=16), progress=False)[0]
    assert len(free.text) > 3
    stop = free.text[2:4]
    cut = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=16, stop=[stop]), progress=False)[0]
    assert stop not in cut.text
    assert free.text.startswith(cut.text)
    assert cut.finish_reason == "stop"


def test_too_long_prompt_truncates_or_errors(tiny_model_dir):
    loaded = load(str(tiny_model_dir))
    long = Prompt(id="long", text="word " * 600, chat=False)  # tiny model has 512 positions
    engine = Engine(loaded, EngineConfig(truncation="left"))
    with pytest.warns(UserWarning, match="truncated"):
        out = engine.generate([long], SamplingParams(max_new_tokens=4), progress=False)[0]
    assert out.truncated_prompt and out.prompt_tokens == 512 - 4
    strict = Engine(loaded, EngineConfig(truncation="error"))
    with pytest.raises(PromptTooLongError, match="long"):
        strict.generate([long], SamplingParams(max_new_tokens=4), progress=False)


def _naive_loglik(engine: Engine, request: ScoreRequest) -> list[float]:
    enc = engine.encode_score(request)
    out = []
    with torch.inference_mode():
        for cont in enc.continuation_ids:
            ids = torch.tensor([enc.context_ids + cont])
            logprobs = torch.log_softmax(engine.model(input_ids=ids).logits.float(), dim=-1)[0]
            start = len(enc.context_ids)
            out.append(float(logprobs[start - 1 : -1].gather(-1, ids[0, start:, None]).sum()))
    return out


REQUESTS = [
    ScoreRequest(
        id="mc",
        context="Question: which is a colour?\nAnswer:",
        continuations=[" red", " seven", " quickly run", " a"],
    ),
    ScoreRequest(id="short", context="The", continuations=[" cat sat on the mat", " dog"]),
    ScoreRequest(id="letters", context="Pick one. Answer:", continuations=[" A", " B", " C", " D"]),
    ScoreRequest(id="trailing", context="Answer: ", continuations=["yes", "no"]),
    ScoreRequest(id="empty-ctx", context="", continuations=["Hello world", "Goodbye"]),
]


def test_score_matches_per_choice_forward(engine):
    results = engine.score(REQUESTS, progress=False)
    for req, res in zip(REQUESTS, results, strict=True):
        assert res.id == req.id
        assert res.logprobs == pytest.approx(_naive_loglik(engine, req), abs=1e-4)
        assert res.num_chars == [len(c) for c in req.continuations]


def test_single_token_fast_path_matches(engine):
    only_letters = [REQUESTS[2]] * 4
    results = engine.score(only_letters, progress=False)
    expected = _naive_loglik(engine, REQUESTS[2])
    for res in results:
        assert res.logprobs == pytest.approx(expected, abs=1e-4)
        assert sum(res.is_greedy) <= 1


def test_trailing_space_moves_to_continuation(engine):
    enc = engine.encode_score(REQUESTS[3])
    assert engine.tokenizer.decode(enc.context_ids) == "Answer:"
    assert engine.tokenizer.decode(enc.continuation_ids[0]) == " yes"


def test_traces_record_every_call(tiny_model_dir, tmp_path):
    from tether.runs import Tracer

    tracer = Tracer(tmp_path / "traces.jsonl")
    engine = Engine(load(str(tiny_model_dir)), tracer=tracer)
    engine.generate(PROMPTS[:2], SamplingParams(max_new_tokens=3), progress=False)
    engine.score(REQUESTS[:1], stage="unit", progress=False)
    lines = (tmp_path / "traces.jsonl").read_text().splitlines()
    assert len(lines) == 3
    import json

    traces = [json.loads(line) for line in lines]
    by_id = {t.get("prompt_id"): t for t in traces if t["kind"] == "generate"}
    assert by_id["a"]["prompt"] == PROMPTS[0].text and by_id["b"]["prompt"] == PROMPTS[1].text
    assert all("latency_s" in t for t in traces)
    assert traces[2]["kind"] == "score" and traces[2]["item_id"] == "mc"
