"""Engine behaviour on a tiny random Llama: batching must not change results."""

from __future__ import annotations

import collections

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


@pytest.mark.parametrize("decode_loop", ["tether", "transformers"])
def test_stop_string_cuts_text(tiny_model_dir, decode_loop):
    engine = Engine(load(str(tiny_model_dir)), EngineConfig(batch_size=4, decode_loop=decode_loop))
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


# ---------------------------------------------------------------------------------------------------
# Tether's decode loop (static KV cache, continuous batching)


def _hf_greedy(loaded, ids: list[int], max_new_tokens: int, eos: list[int]) -> list[int]:
    """One prompt through transformers' own generate: the reference the decode loop must equal."""
    with torch.inference_mode():
        out = loaded.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=loaded.tokenizer.pad_token_id,
            eos_token_id=eos,
            temperature=None,
            top_p=None,
            top_k=None,
        )
    new = out[0, len(ids) :].tolist()
    return new[: next((i for i, t in enumerate(new) if t in eos), len(new))]


@pytest.mark.parametrize("slots", [1, 2, 8])
def test_decode_loop_greedy_equals_transformers_generate(tiny_model_dir, slots):
    """Greedy text from the decode loop equals transformers' generate one prompt at a time, whether
    the 5 prompts run one at a time, through 2 refilled slots, or all at once."""
    loaded = load(str(tiny_model_dir))
    engine = Engine(loaded, EngineConfig(batch_size=slots, decode_loop="tether"))
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=20), progress=False)
    for prompt, completion in zip(PROMPTS, out, strict=True):
        ids = engine.encode_prompt(prompt, 20)[0]
        assert completion.token_ids == _hf_greedy(loaded, ids, 20, engine.eos_token_ids), prompt.id
        assert completion.prompt_token_ids == ids
    old = Engine(loaded, EngineConfig(batch_size=slots, decode_loop="transformers"))
    assert [c.text for c in out] == [c.text for c in old.generate(PROMPTS, SamplingParams(max_new_tokens=20))]


def test_decode_loop_slots_fit_the_kv_budget(tiny_model_dir):
    """engine.decode_slots sets the sequences in flight and engine.kv_cache_mb caps them: a budget
    for one sequence runs one slot at a time, with the same greedy text as 64 slots."""
    from tether.engine.decode import DecodeLoop

    loaded = load(str(tiny_model_dir))
    wide = Engine(loaded, EngineConfig(decode_slots=64, decode_loop="tether"))
    out = wide.generate(PROMPTS, SamplingParams(max_new_tokens=20), progress=False)
    loop = DecodeLoop(loaded.model, loaded.tokenizer, wide.eos_token_ids, wide.backend.pad_id, "cpu")
    config = loaded.model.config
    per_token = (
        config.num_hidden_layers
        * 2
        * config.num_key_value_heads
        * (config.hidden_size // config.num_attention_heads)
        * 4
    )
    assert loop.kv_bytes_per_token == per_token
    assert loop.fitting_slots(64, 100) == 64  # no budget
    loop.kv_cache_bytes = 3 * 100 * per_token + 1
    assert loop.fitting_slots(64, 100) == 3
    assert loop.fitting_slots(2, 100) == 2
    loop.kv_cache_bytes = 1
    assert loop.fitting_slots(64, 100) == 1
    narrow = Engine(loaded, EngineConfig(decode_slots=64, kv_cache_mb=1, decode_loop="tether"))
    narrow.backend._kv_cache_bytes = per_token * 40
    assert [
        c.token_ids for c in narrow.generate(PROMPTS, SamplingParams(max_new_tokens=20), progress=False)
    ] == [c.token_ids for c in out]
    assert narrow.backend._loop.fitting_slots(64, 40) == 1


def test_decode_loop_on_a_lora_policy(tiny_model_dir):
    """PPO validates its LoRA policy greedily through the engine: adapters stay active in the loop."""
    from dataclasses import replace

    from peft import LoraConfig, get_peft_model

    loaded = load(str(tiny_model_dir))
    torch.manual_seed(0)
    lora = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for module in lora.modules():
        if hasattr(module, "lora_B"):
            for weight in module.lora_B.values():
                torch.nn.init.normal_(weight.weight, std=1.0)
    adapted = replace(loaded, model=lora.eval())
    engine = Engine(adapted, EngineConfig(batch_size=2, decode_loop="tether"))
    out = engine.generate(PROMPTS[:3], SamplingParams(max_new_tokens=12), progress=False)
    for prompt, completion in zip(PROMPTS[:3], out, strict=True):
        ids = engine.encode_prompt(prompt, 12)[0]
        assert completion.token_ids == _hf_greedy(adapted, ids, 12, engine.eos_token_ids)
    with lora.disable_adapter():
        base = engine.generate(PROMPTS[:3], SamplingParams(max_new_tokens=12), progress=False)
    assert [c.token_ids for c in base] != [c.token_ids for c in out]


def test_default_sampling_keeps_transformers_samples(tiny_model_dir):
    """engine.decode_loop=auto samples through transformers' generate, seeded per batch as before, so
    a seed and batch plan give the samples they gave before the decode loop existed."""
    from tether.models.padding import left_pad

    loaded = load(str(tiny_model_dir))
    engine = Engine(loaded, EngineConfig(batch_size=2))
    params = SamplingParams(max_new_tokens=8, temperature=0.9, n=2, seed=3)
    out = engine.generate(PROMPTS[:2], params, progress=False, batch_size=2, sort_by_length=False)
    ids, mask = left_pad([engine.encode_prompt(p, 8)[0] for p in PROMPTS[:2]], engine.backend.pad_id, "cpu")
    torch.manual_seed(3 * 1_000_003 + 0)
    with torch.inference_mode():
        expected = loaded.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=8,
            do_sample=True,
            num_return_sequences=2,
            temperature=0.9,
            top_p=1.0,
            top_k=0,
            pad_token_id=engine.backend.pad_id,
            eos_token_id=engine.eos_token_ids,
        )[:, ids.shape[1] :].tolist()
    eos = set(engine.eos_token_ids)
    expected = [row[: next((i for i, t in enumerate(row) if t in eos), len(row))] for row in expected]
    assert [c.token_ids for c in out] == expected


def test_decode_loop_sampling_is_seeded_per_sequence(tiny_model_dir):
    """Sampling in the decode loop: each sequence has its own seeded generator, so the same seed gives
    the same samples whatever the number of slots, and another seed gives others."""
    loaded = load(str(tiny_model_dir))
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=7)

    def sample(slots: int, seed: int = 7) -> list[list[int]]:
        engine = Engine(loaded, EngineConfig(batch_size=slots, decode_loop="tether"))
        out = engine.generate(PROMPTS[:3], params.model_copy(update={"seed": seed}), progress=False)
        assert [c.sample_index for c in out] == [0, 1, 2] * 3
        return [c.token_ids for c in out]

    first = sample(9)
    assert sample(9) == first
    assert sample(2) == first
    assert sample(9, seed=8) != first
    assert len({tuple(t) for t in first[:3]}) > 1  # a prompt's samples differ from each other


SHARED = "You are a careful assistant. Here is a worked example of a good answer. " * 12
PREFIXED = [
    Prompt(id=f"p{i}", text=SHARED + ending)
    for i, ending in enumerate(["Why is the sky blue?", "Name three fruits.", "Why is grass green?", "Hi"])
]


def test_prefill_on_a_shared_prefix_matches_a_full_prefill(tiny_model_dir):
    """A prompt prefilled on the cached keys and values of its predecessor's shared prefix gets the
    same first-token logits and the same cache as one prefilled whole."""
    from tether.engine.decode import DecodeLoop

    loaded = load(str(tiny_model_dir))
    engine = Engine(loaded, EngineConfig(decode_loop="tether"))
    first, second = (engine.encode_prompt(p, 8)[0] for p in PREFIXED[:2])
    loop = DecodeLoop(loaded.model, loaded.tokenizer, engine.eos_token_ids, engine.backend.pad_id, "cpu")
    with torch.no_grad():
        whole = loop._prefill_alone(second, reuse=False)
        loop.prefixes.add(first, loop._prefill_alone(first, reuse=False).cache)
        reused = loop._prefill_alone(second, reuse=True)
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared > 100 and loop.reused_tokens == shared
    torch.testing.assert_close(reused.logits, whole.logits, atol=1e-5, rtol=1e-4)
    for a, b in zip(reused.cache.layers, whole.cache.layers, strict=True):
        assert a.keys.shape == b.keys.shape == (1, a.keys.shape[1], len(second), a.keys.shape[3])
        torch.testing.assert_close(a.keys, b.keys, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.values, b.values, atol=1e-5, rtol=1e-4)


def test_prefix_store_supersedes_extended_prompts_and_keeps_to_its_budget():
    from tether.engine.decode import PrefixStore

    store = PrefixStore(max_bytes=10 * 4, bytes_per_token=4)  # room for 10 tokens
    store.add([1, 2, 3], "a")
    store.add([1, 2, 3, 4, 5], "b")  # extends a, so serves everything a could: a goes
    assert list(store.entries) == [(1, 2, 3, 4, 5)]
    assert store.longest([1, 2, 3, 9]) == (3, "b")
    assert store.longest([8]) == (0, None)
    store.add([7, 8, 9], "c")
    store.add([6, 6, 6], "d")  # 11 tokens: the least recently used goes
    assert list(store.entries) == [(7, 8, 9), (6, 6, 6)]
    store.longest([7, 8, 0])  # c is used, so d is now the least recent
    store.add([5, 5, 5, 5, 5], "e")
    assert list(store.entries) == [(7, 8, 9), (5, 5, 5, 5, 5)]
    store.keep_for(("state", 1))  # made under another state (none): emptied
    assert not store.entries
    store.add([1, 2], "f")
    store.keep_for(("state", 1))
    assert list(store.entries) == [(1, 2)]
    store.keep_for(("state", 2))
    assert not store.entries

    within_a_call = PrefixStore(max_bytes=0, bytes_per_token=4)  # no budget: the last prompt only
    within_a_call.add([1, 2, 3], "a")
    within_a_call.add([4, 5], "b")
    assert list(within_a_call.entries) == [(4, 5)] and not within_a_call.persistent


def test_prefix_store_drops_superseded_turns_before_live_conversations():
    """Conversations come back once a round, each a turn longer and ending in a turn-specific line
    (a red-team attacker's request). With room for every conversation's latest turn but not for the
    turn before as well, each lookup finds its own conversation; least-recently-used eviction
    dropped the next conversation's entry every time and missed them all."""
    from tether.engine.decode import PrefixStore

    def request(conversation: int, turn: int) -> list[int]:
        history = [conversation] + [c for t in range(1, turn) for c in (t, t)]
        return history + [100 + turn]  # "this is turn N": shared with no other request

    conversations, last_turn = (1, 2, 3), 4
    room = sum(len(request(c, last_turn)) for c in conversations) + 2  # not for a turn before as well
    store = PrefixStore(max_bytes=room * 4, bytes_per_token=4)
    for conversation in conversations:
        store.add(request(conversation, 1), f"{conversation}/1")
    for turn in range(2, last_turn + 1):
        for conversation in conversations:
            prompt, before = request(conversation, turn), request(conversation, turn - 1)
            assert store.longest(prompt) == (len(before) - 1, f"{conversation}/{turn - 1}")
            store.add(prompt, f"{conversation}/{turn}")
            assert store.tokens <= room
    assert sorted(store.entries.values()) == ["1/4", "2/4", "3/4"]

    # A stored prompt that a new one is a prefix of holds all of the new one: the new one goes first.
    store = PrefixStore(max_bytes=9 * 4, bytes_per_token=4)
    store.add([1, 2, 3, 4, 5], "long")
    store.add([1, 2, 3], "prefix")
    store.add([7], "other")  # 9 tokens: at the budget
    store.add([8], "more")  # past it: "prefix" goes, although "long" is less recently used
    assert list(store.entries.values()) == ["long", "other", "more"]


def test_model_state_sees_weights_hooks_and_adapter_switches(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from tether.engine.decode import model_state

    model = load(str(tiny_model_dir)).model
    start = model_state(model)
    assert model_state(model) == start
    handle = model.model.layers[0].mlp.register_forward_hook(lambda _m, _a, out: out * 2)
    assert model_state(model) != start
    handle.remove()
    assert model_state(model) == start
    model.train(not model.training)  # dropout on or off
    assert model_state(model) != start
    model.train(not model.training)
    assert model_state(model) == start
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1.0)  # same values, written in place
    assert model_state(model) != start
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    on = model_state(peft)
    with peft.disable_adapter():
        assert model_state(peft) != on
    assert model_state(peft) == on
    # What a CUDA graph depends on ignores in-place writes, which the graph reads where they lie.
    frozen = model_state(peft, versions=False)
    with torch.no_grad():
        peft.base_model.model.model.layers[0].mlp.down_proj.weight.mul_(1.0)
    assert model_state(peft, versions=False) == frozen and model_state(peft) != on
    with peft.disable_adapter():
        assert model_state(peft, versions=False) != frozen


def test_decode_step_auto_is_the_cuda_graph_on_cuda_only():
    from tether.engine.decode import resolve_step

    assert resolve_step("auto", "cpu") == "eager"
    assert resolve_step("auto", torch.device("cuda", 0)) == "cuda_graph"
    assert resolve_step("eager", "cuda") == "eager"
    assert resolve_step("compiled", "cpu") == "compiled"
    assert EngineConfig().decode_step == "auto"


def test_a_captured_step_is_captured_again_when_the_model_changes_but_not_when_weights_are_written(
    tiny_model_dir, monkeypatch
):
    """The loop keeps one graph per shape across calls. An optimizer's in-place step must reuse it
    (the graph reads the new values); a hook or an adapter switch, which a replay would not run, must
    not. Runs on the CPU with a stand-in for the graph that counts captures and steps eagerly."""
    from peft import LoraConfig, get_peft_model

    from tether.engine import decode

    captures = []

    class CountingGraph:
        def __init__(self, forward):
            captures.append(forward)
            self.forward = forward

        def __call__(self, ids, cache, mask):
            return self.forward(ids, cache, mask)

    monkeypatch.setattr(decode, "_GraphedStep", CountingGraph)
    loaded = load(str(tiny_model_dir))
    model = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["q_proj"]))
    engine = Engine(loaded, EngineConfig(decode_loop="tether"))
    loop = decode.DecodeLoop(model, loaded.tokenizer, engine.eos_token_ids, engine.backend.pad_id, "cpu")
    loop.step = "cuda_graph"  # the CPU cannot capture; the stand-in above runs the step instead
    prompts = [engine.encode_prompt(p, 8)[0] for p in PREFIXED[2:]]
    params = SamplingParams(max_new_tokens=4)

    def run():
        return sorted((i, s[0].token_ids) for i, s, _ in loop.run(prompts, params, slots=2))

    eager = decode.DecodeLoop(model, loaded.tokenizer, engine.eos_token_ids, engine.backend.pad_id, "cpu")
    reference = sorted((i, s[0].token_ids) for i, s, _ in eager.run(prompts, params, slots=2))
    assert run() == reference and len(captures) == 1
    assert run() == reference and len(captures) == 1  # same shapes, same model: replayed
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.0)  # an optimizer step's in-place write
    run()
    assert len(captures) == 1
    with model.disable_adapter():
        run()
    assert len(captures) == 2
    handle = model.base_model.model.model.layers[0].mlp.register_forward_hook(lambda _m, _a, out: out)
    run()
    assert len(captures) == 3
    handle.remove()
    run()
    assert len(captures) == 4


def test_a_calls_span_counts_the_prompt_tokens_it_reused(tiny_model_dir, tmp_path):
    from tether.runs import Run
    from tether.tracing import SPANS_FILENAME, read_spans

    run = Run.create("reuse", root=tmp_path, job="test")
    engine = Engine(
        load(str(tiny_model_dir)), EngineConfig(decode_loop="tether", prefix_reuse="on"), run.tracer
    )
    engine.generate(PREFIXED, SamplingParams(max_new_tokens=4), progress=False)
    engine.generate(PREFIXED[:1], SamplingParams(max_new_tokens=4), progress=False)
    run.finish()
    calls = [s for s in read_spans(run.path / SPANS_FILENAME) if "tether.batch.prompts" in s["attributes"]]
    reused = [c["attributes"]["tether.prefix.reused_tokens"] for c in calls]
    assert reused[0] == engine.backend.reused_prompt_tokens > 300 and reused[1] == 0
    assert {c["attributes"]["tether.model.dtype"] for c in calls} == {"float32"}


def test_prefix_cache_carries_a_conversation_across_calls(tiny_model_dir):
    """engine.prefix_cache_mb: a prompt that extends an earlier call's prompt prefills only its new
    tokens, with greedy text equal to generate's; without a budget nothing carries over between
    calls; a new hook or a weight written in place empties the store, and the text is then the
    changed model's."""
    from tether.engine.decode import admission_order, shared_prefix

    loaded = load(str(tiny_model_dir))
    turn1 = [
        Prompt(id=f"c{i}", text=SHARED + q) for i, q in enumerate(["Why is the sky blue?", "Name fruits."])
    ]
    turn2 = [Prompt(id=p.id, text=p.text + " Because of the light. And why is that?") for p in turn1]
    params = SamplingParams(max_new_tokens=6)

    def expected(stored: list[list[int]], prompts: list[list[int]]) -> int:
        """Tokens reused when ``prompts`` run in admission order on top of ``stored``."""
        total, store = 0, list(stored)
        for i in admission_order(prompts, reuse=True):
            total += min(max((shared_prefix(prompts[i], s) for s in store), default=0), len(prompts[i]) - 1)
            store.append(prompts[i])
        return total

    def second_call(engine: Engine) -> tuple[int, list]:
        loop_before = engine.backend._loop.reused_tokens if engine.backend._loop else 0
        out = engine.generate(turn2, params, progress=False)
        return engine.backend._loop.reused_tokens - loop_before, out

    def check_text(engine: Engine, out) -> None:
        for prompt, completion in zip(turn2, out, strict=True):
            ids = engine.encode_prompt(prompt, 6)[0]
            assert completion.token_ids == _hf_greedy(loaded, ids, 6, engine.eos_token_ids), prompt.id

    kept = Engine(loaded, EngineConfig(decode_loop="tether", prefix_reuse="on", prefix_cache_mb=64))
    ids1 = [kept.encode_prompt(p, 6)[0] for p in turn1]
    ids2 = [kept.encode_prompt(p, 6)[0] for p in turn2]
    assert all(len(i) > 128 for i in ids1)  # long enough to be prefilled alone
    kept.generate(turn1, params, progress=False)
    reused, out = second_call(kept)
    assert reused == expected(ids1, ids2) > expected([], ids2)
    check_text(kept, out)

    per_call = Engine(loaded, EngineConfig(decode_loop="tether", prefix_reuse="on"))
    per_call.generate(turn1, params, progress=False)
    assert second_call(per_call)[0] == expected([], ids2)

    handle = loaded.model.model.layers[0].mlp.register_forward_hook(lambda _m, _a, out: out * 3)
    try:
        reused, out = second_call(kept)
        assert reused == expected([], ids2)  # the stored keys and values were the unhooked model's
        check_text(kept, out)
    finally:
        handle.remove()
    second_call(kept)
    with torch.no_grad():
        loaded.model.model.layers[1].mlp.down_proj.weight.mul_(3.0)
    reused, out = second_call(kept)
    assert reused == expected([], ids2)
    check_text(kept, out)

    # under 'auto' a greedy call reuses nothing, and leaves the kept prompts to the next sampled call
    sampled = SamplingParams(max_new_tokens=4, temperature=0.8)
    auto = Engine(loaded, EngineConfig(decode_loop="tether", prefix_cache_mb=64))
    auto.generate(turn1, sampled, progress=False)
    auto.generate([Prompt(id="other", text="A short greedy question?")], params, progress=False)
    before = auto.backend.reused_prompt_tokens
    auto.generate(turn2, sampled, progress=False)
    assert auto.backend.reused_prompt_tokens - before == expected(ids1, ids2)


@pytest.mark.parametrize("slots", [1, 4])
def test_decode_loop_reuses_shared_prefixes(tiny_model_dir, slots):
    """engine.prefix_reuse=on: prompts run in token order, each long one prefilled past the prefix it
    shares with the one before, with greedy text equal to generate's; 'auto' reuses only when sampling."""
    loaded = load(str(tiny_model_dir))
    engine = Engine(loaded, EngineConfig(decode_slots=slots, decode_loop="tether", prefix_reuse="on"))
    out = engine.generate(PREFIXED, SamplingParams(max_new_tokens=10), progress=False)
    encoded = sorted(engine.encode_prompt(p, 10)[0] for p in PREFIXED)
    expected = sum(
        next(i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b)
        for x, y in zip(encoded, encoded[1:], strict=False)
    )
    assert engine.backend._loop.reused_tokens == expected > 300
    for prompt, completion in zip(PREFIXED, out, strict=True):
        ids = engine.encode_prompt(prompt, 10)[0]
        assert completion.token_ids == _hf_greedy(loaded, ids, 10, engine.eos_token_ids), prompt.id

    auto = Engine(loaded, EngineConfig(decode_slots=slots, decode_loop="tether"))
    auto.generate(PREFIXED, SamplingParams(max_new_tokens=4), progress=False)
    assert auto.backend._loop.reused_tokens == 0
    auto.generate(PREFIXED, SamplingParams(max_new_tokens=4, temperature=0.8), progress=False)
    assert auto.backend._loop.reused_tokens == expected


def test_decode_steps_use_the_packed_lm_head(tiny_model_dir, monkeypatch):
    """On a float32 CPU model each decode step computes its logits with the LM head packed for oneDNN
    (within 1e-4 of the plain head's), greedy text stays generate's, the head is plain again after
    every step and after a call cut short, and the packed copy is remade only when the weight changes;
    engine.packed_head=false, a bfloat16 head or a head with a forward of its own get the plain head."""
    from tether.engine import decode

    class Stub(torch.nn.Module):
        def __init__(self, head):
            super().__init__()
            self.head = head

        def get_output_embeddings(self):
            return self.head

    torch.manual_seed(0)
    biased = torch.nn.Linear(8, 50)
    head, forward = decode.packed_lm_head(Stub(biased))
    x = torch.randn(3, 2, 8)
    torch.testing.assert_close(forward(x), biased(x), atol=1e-4, rtol=1e-4)
    assert decode.packed_lm_head(Stub(torch.nn.Linear(8, 50).to(torch.bfloat16))) is None
    own = torch.nn.Linear(8, 50)
    own.forward = lambda x: x
    assert decode.packed_lm_head(Stub(own)) is None

    calls = collections.Counter()
    real = decode.packed_lm_head

    def counting(model):
        calls["packed"] += 1
        head, forward = real(model)

        def counted(x):
            calls[x.shape[0]] += 1
            return forward(x)

        return head, counted

    monkeypatch.setattr(decode, "packed_lm_head", counting)
    loaded = load(str(tiny_model_dir))
    head = loaded.model.get_output_embeddings()
    engine = Engine(loaded, EngineConfig(decode_slots=2, decode_loop="tether"))
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12), progress=False)
    assert calls[2] > 0 and set(calls) == {2, "packed"} and calls["packed"] == 1  # two slots a step
    assert "forward" not in head.__dict__ and engine.backend._loop._head is None
    for prompt, completion in zip(PROMPTS, out, strict=True):
        ids = engine.encode_prompt(prompt, 12)[0]
        assert completion.token_ids == _hf_greedy(loaded, ids, 12, engine.eos_token_ids), prompt.id

    cut = engine.backend._loop.run([engine.encode_prompt(p, 12)[0] for p in PROMPTS], SamplingParams(), 2)
    next(cut)
    cut.close()
    assert "forward" not in head.__dict__ and engine.backend._loop._head is None
    assert calls["packed"] == 1  # the weight has not changed: the copy is kept
    with torch.no_grad():
        head.weight.mul_(1.0)  # written in place, as an optimizer step writes it
    engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2), progress=False)
    assert calls["packed"] == 2

    calls.clear()
    plain = Engine(loaded, EngineConfig(decode_slots=2, decode_loop="tether", packed_head=False))
    assert [c.token_ids for c in plain.generate(PROMPTS, SamplingParams(max_new_tokens=12))] == [
        c.token_ids for c in out
    ]
    assert not calls


def test_stop_matcher_follows_multibyte_text(tiny_model_dir):
    """Stop strings are found on the text decoded so far, token by token, even when a character is
    split across tokens, and at the first token whose text completes them."""
    from tether.engine.decode import StopMatcher

    tokenizer = load(str(tiny_model_dir)).tokenizer
    text = "Réponse: café 🙂 — fin.\n\nNext line"
    tokens = tokenizer.encode(text, add_special_tokens=False)
    for stop in ["🙂", "\n\n", "é 🙂 —", "fin.", "absent"]:
        matcher = StopMatcher([stop], tokenizer)
        fired = next((k for k, t in enumerate(tokens, 1) if matcher.push(t)), None)
        expected = next((k for k in range(1, len(tokens) + 1) if stop in tokenizer.decode(tokens[:k])), None)
        assert fired == expected, stop
    # transformers' generate path: the same matcher per row, fed one step at a time.
    from tether.engine.hf import StopOnStrings

    prompt = [1, 2, 3]
    rows = torch.tensor([prompt + tokens, prompt + tokens[::-1]])
    criterion = StopOnStrings(len(prompt), ["fin."], tokenizer)
    fired = [criterion(rows[:, : len(prompt) + k], None).tolist() for k in range(1, len(tokens) + 1)]
    first = next(k for k in range(1, len(tokens) + 1) if "fin." in tokenizer.decode(tokens[:k]))
    assert [f[0] for f in fired] == [k >= first for k in range(1, len(tokens) + 1)]


def test_static_cache_too_short_errors_or_truncates(tiny_model_dir):
    loaded = load(str(tiny_model_dir))
    prompt = Prompt(id="wordy", text="word " * 40, chat=False)
    strict = Engine(loaded, EngineConfig(cache_tokens=32, truncation="error"))
    with pytest.raises(
        PromptTooLongError, match=r"'wordy' has 41 tokens; at most 28 fit \(32-token static KV cache"
    ):
        strict.generate([prompt], SamplingParams(max_new_tokens=4), progress=False)
    lenient = Engine(loaded, EngineConfig(cache_tokens=32, truncation="left"))
    with pytest.warns(
        UserWarning, match="truncated from 41 to its last 28 tokens to fit the static KV cache"
    ):
        out = lenient.generate([prompt], SamplingParams(max_new_tokens=4), progress=False)[0]
    assert out.truncated_prompt and out.prompt_tokens == 28


# ------------------------------------------------------------------ packed scoring


def _naive_scores(model, context_ids: list[int], continuations: list[list[int]]):
    """One plain forward per (context, continuation): summed log-probs and lm-eval's is_greedy."""
    logprobs, greedy = [], []
    with torch.inference_mode():
        for cont in continuations:
            ids = torch.tensor([context_ids + cont])
            lp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
            start = len(context_ids)
            predicted = lp[start - 1 : -1]
            logprobs.append(float(predicted.gather(-1, ids[0, start:, None]).sum()))
            greedy.append(bool((predicted.argmax(-1) == ids[0, start:]).all()))
    return logprobs, greedy


def _check_backend(backend, model, requests, *, force_greedy_hit: bool = False):
    from tether.engine.backend import EncodedScore

    requests = [EncodedScore(context_ids=c, continuation_ids=k) for c, k in requests]
    packed = backend.score(requests)
    assert len(packed) == len(requests)
    hits = 0
    for req, got in zip(requests, packed, strict=True):
        want_lp, want_greedy = _naive_scores(model, req.context_ids, req.continuation_ids)
        assert got.logprobs == pytest.approx(want_lp, abs=1e-4)
        assert got.is_greedy == want_greedy
        hits += sum(want_greedy)
    if force_greedy_hit:
        assert hits > 0  # the comparison covered a True as well as Falses


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    loaded = load(str(tiny_model_dir))
    return loaded.model, loaded.tokenizer


def _greedy_continuation(model, context: list[int], length: int) -> list[int]:
    ids = list(context)
    with torch.inference_mode():
        for _ in range(length):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(context) :]


def _ids(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("llama_forward", [True, False], ids=["llama-forward", "hf-decoder"])
@pytest.mark.parametrize("row_tokens", [1, 16, 512])
def test_packed_scoring_matches_naive_forward(tiny, row_tokens, llama_forward):
    """Single- and multi-token continuations, a context far longer than the others (so rows are
    padded), continuations sharing first tokens, and a greedy continuation (is_greedy True), with
    rows of one item each, a few items, or all items in one prefix tree; through the backend's own
    Llama forward and through transformers' decoder with the 4-D mask."""
    from tether.engine.hf import HFBackend

    model, tok = tiny
    backend = HFBackend(model, tok, torch.device("cpu"), max_row_tokens=row_tokens, head_chunk=3)
    assert backend._llama_layers  # the tiny model is a plain Llama
    backend._llama_layers = llama_forward
    long_ctx = _ids(tok, "A much longer context that goes on and on about many different things " * 4)
    short_ctx = _ids(tok, "Question: which is a colour?\nAnswer:")
    requests = [
        (short_ctx, [_ids(tok, " A"), _ids(tok, " B"), _ids(tok, " C"), _ids(tok, " D")]),
        (long_ctx, [_ids(tok, " red"), _ids(tok, " seven quickly"), _ids(tok, " red apple pie")]),
        (_ids(tok, "The"), [_ids(tok, " cat sat on the mat"), _ids(tok, " cat")]),
        (short_ctx + _ids(tok, " B"), [_greedy_continuation(model, short_ctx + _ids(tok, " B"), 4), [5]]),
        (_ids(tok, "Question: which is a shape?\nAnswer:"), [_ids(tok, " square"), _ids(tok, " A")]),
    ]
    _check_backend(backend, model, requests, force_greedy_hit=True)


def test_packed_scoring_one_token_context(tiny):
    """A one-token context (what the engine makes of an empty one: EOS) packed beside longer ones."""
    from tether.engine.backend import EncodedScore
    from tether.engine.hf import HFBackend

    model, tok = tiny
    backend = HFBackend(model, tok, torch.device("cpu"), max_row_tokens=64)
    eos = tok.eos_token_id
    requests = [
        ([eos], [_ids(tok, "Hello world"), _ids(tok, "Goodbye")]),
        (_ids(tok, "Pick one. Answer:"), [_ids(tok, " A"), _ids(tok, " B")]),
        ([eos], [_ids(tok, "Hello there"), [eos]]),
    ]
    _check_backend(backend, model, requests)
    with pytest.raises(ValueError, match="non-empty context"):
        backend.score([EncodedScore([], [[1]])])


def test_packed_scoring_eager_attention(tiny_model_dir):
    """The additive-mask form for eager attention gives the same scores."""
    from tether.engine.hf import HFBackend

    loaded = load(str(tiny_model_dir))
    loaded.model.set_attn_implementation("eager")
    assert loaded.model.config._attn_implementation == "eager"
    tok = loaded.tokenizer
    backend = HFBackend(loaded.model, tok, torch.device("cpu"), max_row_tokens=40)
    backend._llama_layers = False  # through transformers' eager attention, not the backend's forward
    requests = [
        (_ids(tok, "Question: which is a colour?\nAnswer:"), [_ids(tok, " red"), _ids(tok, " seven days")]),
        (_ids(tok, "Question: which is a shape?\nAnswer:"), [_ids(tok, " A"), _ids(tok, " B")]),
        (_ids(tok, "The"), [_ids(tok, " cat sat on the mat")]),
    ]
    _check_backend(backend, loaded.model, requests)


def test_packed_scoring_sliding_window_layers(smollm2_tokenizer_dir):
    """A model mixing full and sliding-window layers (Gemma 3) with a window shorter than the
    contexts: the sliding layers' mask must drop ancestors a window or more positions back."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from tether.engine.hf import HFBackend

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tok.pad_token_id,
    )
    model = Gemma3ForCausalLM(config).eval()
    backend = HFBackend(model, tok, torch.device("cpu"), max_row_tokens=200)
    requests = [
        (
            _ids(tok, "A context well past the four-token window of the sliding layers"),
            [_ids(tok, " yes it is so")],
        ),
        (_ids(tok, "A context"), [_ids(tok, " of one"), _ids(tok, " B")]),
    ]
    _check_backend(backend, model, requests)


def test_pack_shares_prefixes_and_masks_ancestors():
    from tether.engine.backend import EncodedScore
    from tether.engine.packing import pack, plan_rows

    a = EncodedScore(context_ids=[1, 2, 3], continuation_ids=[[7], [8]])
    b = EncodedScore(context_ids=[1, 2, 4], continuation_ids=[[5, 6], [5, 9, 9]])
    batch = pack([a, b], max_row_tokens=100, pad_id=0)
    # one row: 1 2 3 | 4 | 5 (shared by b's continuations) 9 -> 6 nodes, not 3+3+1+2
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5, 9]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 2, 3, 4]]
    anc = batch.ancestors[0].astype(int).tolist()
    assert anc == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 0, 1, 0, 0],
        [1, 1, 0, 1, 1, 0],
        [1, 1, 0, 1, 1, 1],
    ]
    # a's two tokens and b's first tokens share predictors: 3 (node 2), 4 (node 3), 5, 9
    assert len(batch.predictors) == 4
    assert batch.token_target.tolist() == [7, 8, 5, 6, 5, 9, 9]
    assert batch.token_owner.tolist() == [0, 1, 2, 2, 3, 3, 3]
    # a row cap below the pair's size splits them, and the narrower row is padded, attending itself
    split = pack([a, b], max_row_tokens=4, pad_id=0)
    assert plan_rows([a, b], 4) == [[0], [1]]
    assert split.input_ids.tolist() == [[1, 2, 3, 0, 0], [1, 2, 4, 5, 9]]
    assert split.ancestors[0, 3].tolist() == [False, False, False, True, False]
    # the forward runs only the real nodes: flat cells of row 0's first 3 and all of row 1
    assert split.real_cells().tolist() == [0, 1, 2, 5, 6, 7, 8, 9]
    assert split.real_tokens == 8


def test_prefill_batches_join_short_prompts_of_similar_length():
    """Short prompts of similar length share a prefill; a long prompt, or one that would pad a batch
    by more than a quarter of its width or push it past the token budget, starts its own."""
    from tether.engine.decode import prefill_batches

    assert prefill_batches(list("abcdefg"), [300, 120, 110, 100, 90, 40, 35]) == [
        ["a"],
        ["b", "c", "d", "e"],
        ["f", "g"],
    ]
    assert prefill_batches(list(range(5)), [30] * 5, budget=60) == [[0, 1], [2, 3], [4]]
    assert prefill_batches(["x"], [5000]) == [["x"]]
    assert prefill_batches([], []) == []


def test_admission_order_puts_shared_prefixes_side_by_side():
    """Longest first; with prefix reuse, prompts too long to share a prefill go first, in token order."""
    from tether.engine.decode import PREFILL_BATCH_MAX_PROMPT, admission_order

    long = PREFILL_BATCH_MAX_PROMPT + 1
    prompts = [[5] * 10, [2, 9] + [0] * long, [7] * 30, [2, 3] + [0] * long, [3] * (long + 5)]
    assert admission_order(prompts, reuse=False) == [4, 1, 3, 2, 0]
    assert admission_order(prompts, reuse=True) == [3, 1, 4, 2, 0]
    assert admission_order([], reuse=True) == []


def _nucleus_by_full_sort(scores: torch.Tensor, top_p: float) -> list[dict[int, float]]:
    """Reference: sort the whole vocabulary, keep tokens while the probability before them < top_p."""
    out = []
    for row in scores:
        probs = row.softmax(-1)
        values, order = probs.sort(descending=True)
        keep = (values.cumsum(-1) - values) < top_p if top_p < 1.0 else values > 0
        out.append({int(t): float(v) for t, v in zip(order[keep], values[keep], strict=True)})
    return out


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.999, 1.0])
def test_nucleus_matches_a_full_sort_also_for_flat_rows(top_p):
    """Peaked rows (nucleus within the top-k candidates) and flat rows (nucleus past them, redone over
    the whole vocabulary) in one batch give the same tokens and probabilities as a full sort."""
    from tether.engine.decode import NUCLEUS_CANDIDATES, nucleus

    gen = torch.Generator().manual_seed(0)
    vocab = 4 * NUCLEUS_CANDIDATES
    peaked = torch.randn(3, vocab, generator=gen) * 8
    flat = torch.randn(2, vocab, generator=gen) * 0.1
    scores = torch.cat([peaked, flat])
    tokens, probs = nucleus(scores, top_p)
    want = _nucleus_by_full_sort(scores, top_p)
    for row in range(len(scores)):
        got = {int(t): float(p) for t, p in zip(tokens[row], probs[row], strict=True) if p > 0}
        assert got.keys() == want[row].keys()
        assert [got[t] for t in sorted(got)] == pytest.approx([want[row][t] for t in sorted(got)], rel=1e-5)
    if top_p < 1.0:
        assert max(len(w) for w in want[:3]) < NUCLEUS_CANDIDATES < min(len(w) for w in want[3:])


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_decode_loop_sampling_draws_from_the_nucleus_distribution(top_p):
    """Many seeded draws from one row land on the nucleus's tokens at their renormalised
    probabilities (within 4 standard errors), never outside it; an empty row gets the pad id.
    With top_p 1 the candidates stay in vocabulary order, with zero-probability tokens between."""
    from tether.engine.decode import DecodeLoop, _Sequence

    logits = torch.full((1, 50), -200.0)  # exp underflows to 0
    nucleus_tokens = [3, 7, 11] if top_p < 1 else [3, 7, 11, 20]
    logits[0, [3, 7, 11, 20]] = torch.tensor([2.0, 1.5, 1.0, -1.0])  # 20 is past a 0.9 nucleus
    loop = DecodeLoop.__new__(DecodeLoop)
    loop.pad_id = 0
    params = SamplingParams(temperature=1.0, top_p=top_p, max_new_tokens=1)
    sequence = _Sequence(prompt=0, sample=0, generator=torch.Generator().manual_seed(1), stop=None)
    draws = 4000
    counts = collections.Counter(loop._select(logits, [sequence, None], params)[0] for _ in range(draws))
    assert loop._select(logits, [sequence, None], params)[1] == 0
    assert set(counts) <= set(nucleus_tokens)
    kept = logits[0, nucleus_tokens].softmax(-1)
    for token, p in zip(nucleus_tokens, kept.tolist(), strict=True):
        se = (p * (1 - p) / draws) ** 0.5
        assert abs(counts[token] / draws - p) < 4 * se


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_slot_cache_writes_each_slot_at_its_own_column(dtype):
    """A decode step writes slot s's new key and value at column write_index[s] and nowhere else
    (by indexed assignment: bf16 scatter_ on a CPU copied the whole buffer every call)."""
    from tether.engine.decode import SlotCache

    slots, heads, capacity, dim = 4, 2, 6, 3
    cache = SlotCache(num_layers=1, slots=slots, capacity=capacity, device=torch.device("cpu"))
    cache.write_index.copy_(torch.tensor([0, 5, 2, 2]))
    keys = torch.arange(slots * heads * dim, dtype=dtype).reshape(slots, heads, 1, dim) + 1
    values = -keys
    k, v = cache.update(keys, values, 0)
    assert k.dtype == dtype and k.shape == (slots, heads, capacity, dim)
    for s, col in enumerate([0, 5, 2, 2]):
        assert torch.equal(k[s, :, col], keys[s, :, 0]) and torch.equal(v[s, :, col], values[s, :, 0])
        others = [c for c in range(capacity) if c != col]
        assert not k[s, :, others].any() and not v[s, :, others].any()


def test_from_spec_merges_an_adapter_once_and_keeps_its_results(tiny_model_dir, tmp_path):
    """An adapter loaded by its spec to generate and score is merged into its base (no LoRA modules
    left to run every step): same fingerprint, same greedy tokens, scores within float noise."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = get_peft_model(
        load(str(tiny_model_dir)).model,
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapter_dir = tmp_path / "adapter"
    lora.save_pretrained(adapter_dir)
    config = EngineConfig(decode_loop="tether")
    merged = Engine.from_spec(str(adapter_dir), config)
    unmerged = Engine.from_spec(str(adapter_dir), config.model_copy(update={"merge_adapter": False}))
    assert not hasattr(merged.model, "peft_config")
    assert hasattr(unmerged.model, "peft_config")
    assert merged.fingerprint == unmerged.fingerprint
    params = SamplingParams(max_new_tokens=12)
    assert [c.token_ids for c in merged.generate(PROMPTS, params, progress=False)] == [
        c.token_ids for c in unmerged.generate(PROMPTS, params, progress=False)
    ]
    request = [ScoreRequest(id="q", context="The sky is", continuations=[" blue", " green"])]
    a, b = merged.score(request)[0], unmerged.score(request)[0]
    assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    half = Engine.from_spec(str(adapter_dir), config.model_copy(update={"dtype": "bfloat16"}))
    assert half.fingerprint.endswith("@bfloat16+merged")  # rounded once in bf16: another model's cache
    base = Engine.from_spec(str(tiny_model_dir), config)
    assert [c.token_ids for c in base.generate(PROMPTS, params, progress=False)] != [
        c.token_ids for c in merged.generate(PROMPTS, params, progress=False)
    ]  # the merge kept the adapter's effect


@pytest.mark.parametrize("decode_loop", ["tether", "transformers"])
def test_batched_prefill_feeds_a_bf16_head_contiguous_rows(tiny_model_dir, decode_loop):
    """A batched prefill keeps each row's last hidden state, a view strided by the prompt; a CPU
    bf16 F.linear on such a view is about 100x slower than on a copy, so the head gets the copy (and
    float32 keeps the strided call, whose last bits differ from the copy's)."""
    seen: dict[str, list[bool]] = {}
    for dtype in ("bfloat16", "float32"):
        engine = Engine.from_spec(str(tiny_model_dir), EngineConfig(dtype=dtype, decode_loop=decode_loop))
        head = engine.model.get_output_embeddings()
        calls = seen.setdefault(dtype, [])
        # A forward hook sees the input the head ran on (after any pre-hook's replacement).
        handle = head.register_forward_hook(
            lambda _, args, out, calls=calls: calls.append(args[0].is_contiguous())
        )
        try:
            engine.generate(PROMPTS[:3], SamplingParams(max_new_tokens=4), progress=False)
        finally:
            handle.remove()
        assert len(head._forward_pre_hooks) == 0  # the copy's hook is gone after the call
    assert seen["bfloat16"] and all(seen["bfloat16"])
    assert not all(seen["float32"])  # the strided view the bf16 head is spared
