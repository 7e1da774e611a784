"""Engine speed, side by side in one run on the default model (CPU, 2 threads by default).

Prints ``name: ratio`` lines:
  * generation: 16 prompts x 64 new greedy tokens, the engine (Tether's decode loop: static KV cache,
    continuous batching) vs one ``model.generate`` per prompt, tokens/s of each (greedy text must be
    identical); ``--compare-transformers`` adds the engine on transformers' batched ``generate``;
  * scoring: >=100 real MMLU + HellaSwag items x 4 choices, the engine's prefix-sharing scorer vs one
    forward pass per (context, choice) with a full-vocabulary float32 log_softmax; the engine's
    log-likelihoods must be within 1e-4 of the same forward's float64 log_softmax (computed untimed:
    float32's own misses it by up to 5e-4 on a long HellaSwag ending);
  * slots (``--only slots``): 128 chat prompts x 64 new greedy tokens through the decode loop with
    ``engine.decode_slots`` 16 against 128 (the default), tokens/s and K/V cache size of each (greedy
    text must be identical): how much the real jobs, which generate for many prompts at once, gain
    from more sequences in flight;
  * sampling (``--only sampling``): the same 128 prompts sampled with the CAI loop's settings
    (temperature 0.7, top-p 0.9), transformers' generate in batches of ``engine.batch_size``
    (``engine.decode_loop=auto``, the default for sampling) against the decode loop
    (``engine.decode_loop=tether``); the two draw different samples, so only speed is compared;
  * head (``--only head``): the decode loop with the LM head packed for oneDNN (``engine.packed_head``,
    the default on a CPU in float32) against the plain head, on the 16 and the 128 prompts above
    (greedy text must be identical);
  * prefix (``--only prefix``): CAI critique requests (the shipped constitution's few-shot critique
    prompt for 64 real harmful prompts of the CAI train side, with the model's own greedy answers),
    sampled with the CAI loop's critique settings through the decode loop with
    ``engine.prefix_reuse`` off against on: time of each, and the prompt tokens reuse skips;
  * dtype (``--only dtype``): the decode loop with the model in bfloat16 (``engine.dtype=bfloat16``)
    against float32, greedy, on the 16 and the 128 prompts above: time of each, and how many greedy
    texts the two dtypes share (bf16 rounds differently, so the texts may part); pays only on CPUs
    with bf16 units (avx512_bf16, AMX), which the run prints;
  * adapter (``--only adapter``): a LoRA adapter shaped like Tether's SFT (r 16 on every linear
    module; ``--adapter DIR`` for a trained one, else one with seeded random weights) loaded by its
    spec with ``engine.merge_adapter`` true (merged into the base once) against false (PEFT's LoRA
    modules run every step), greedy through the decode loop on the 16 and the 128 prompts above:
    time of each, and how many greedy texts the two share;
  * rollout (``--only rollout``): PPO's rollouts at ``configs/rlhf.yaml``'s shape (4 BoolQ documents
    x 2 samples a step, temperature 0.7, an unmerged LoRA policy as PPO trains it), transformers'
    generate against the decode loop, which PPO samples in under ``engine.decode_loop=auto``; the two
    draw different samples, so only speed is compared;
  * achieved GFLOP/s of the engine against a plain ``torch.mm`` peak measured in the same run.

Every comparison also prints each side's peak RSS, sampled while that side ran: the sides share one
process and the model it loaded, so each figure includes the model and whatever the allocator kept
from the side before (sides run A-B-B-A, so each runs once after the other); ``benchmarks/ppo.py``
and ``vs_lm_eval.py`` run each side in its own process instead.

Run: ``python benchmarks/engine.py [--threads 2] [--items 120]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import torch
from children import load  # benchmarks/children.py, beside this script

from tether.engine import Engine, Prompt, SamplingParams, ScoreRequest

GEN_PROMPTS = [
    "What is the capital of France?",
    "Explain photosynthesis in one sentence.",
    "Give three tips for writing clear code.",
    "Why is the sky blue?",
    "Summarize the plot of Romeo and Juliet.",
    "What does a compiler do?",
    "Name a prime number larger than 50 and explain why it is prime.",
    "Write a short poem about the sea.",
    "How do vaccines work?",
    "What is the difference between weather and climate?",
    "Describe how a bicycle stays upright.",
    "What are the main causes of inflation?",
    "Translate 'good morning' into Spanish and French.",
    "What is a black hole?",
    "List the planets of the solar system in order.",
    "How should I prepare for a job interview?",
]


class PeakRSS:
    """The process's largest resident set while the block runs, sampled every ``interval`` seconds.
    The sides of a comparison here share one process (and the model it loaded), and ``ru_maxrss``
    only ever grows, so it cannot tell which side needed the memory; a side's peak includes the
    model both sides share."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil  # accelerate's dependency, so always installed with Tether

        self.interval, self.peak = interval, 0
        self._process = psutil.Process()
        self._stop = threading.Event()

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def timed(fn):
    """``(fn(), seconds, peak RSS in bytes while it ran)``."""
    with PeakRSS() as rss:
        began = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - began
    return out, seconds, rss.peak


def print_peaks(tag: str, peaks: dict[str, int]) -> None:
    sides = ", ".join(f"{label} {peak / 2**30:.2f} GB" for label, peak in peaks.items())
    print(f"{tag}: peak RSS while each side ran (one process, the shared model included): {sides}")


def abba(naive_fn, ours_fn, tag: str, labels: tuple[str, str]):
    """Time both ways in A-B-B-A order and average, so load from other processes on a shared
    machine falls on both sides alike; prints ``tag`` and each side's peak RSS, named by ``labels``
    (naive's, ours)."""
    ours_1, t1, ours_peak_1 = timed(ours_fn)
    naive_1, n1, naive_peak_1 = timed(naive_fn)
    naive_2, n2, naive_peak_2 = timed(naive_fn)
    ours_2, t2, ours_peak_2 = timed(ours_fn)
    print_peaks(
        tag,
        dict(zip(labels, (max(naive_peak_1, naive_peak_2), max(ours_peak_1, ours_peak_2)), strict=True)),
    )
    return (naive_1, naive_2), (n1 + n2) / 2, (ours_1, ours_2), (t1 + t2) / 2


def matmul_peak_gflops(threads: int, size: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    seconds = time.perf_counter() - began
    return 2 * size**3 * repeats / seconds / 1e9


def generate_one(engine: Engine, prompt: Prompt, new_tokens: int) -> tuple[str, int]:
    """One greedy ``model.generate`` call for one prompt, as a user would make it: the naive side of
    the generation comparisons (here and in ``ppo_gpu.py``). Returns the text and its token count,
    cut at the first end-of-sequence token as the engine cuts."""
    model, tok, eos = engine.model, engine.tokenizer, engine.backend.eos_ids
    ids = tok(engine.render(prompt), add_special_tokens=False, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        out = model.generate(
            **ids,
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=tok.pad_token_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    cut = next((i for i, t in enumerate(new) if t in eos), len(new))
    return tok.decode(new[:cut], skip_special_tokens=True), cut


def bench_generation(engine: Engine, new_tokens: int, compare_transformers: bool) -> tuple[float, float, int]:
    prompts = [Prompt(id=str(i), text=t) for i, t in enumerate(GEN_PROMPTS)]
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)

    def naive():
        return [generate_one(engine, p, new_tokens) for p in prompts]

    def through(engine_: Engine):
        def run():
            return [(c.text, c.completion_tokens) for c in engine_.generate(prompts, params, progress=False)]

        return run

    sides = {"naive": naive, "engine": through(engine)}
    if compare_transformers:
        config = engine.config.model_copy(update={"decode_loop": "transformers"})
        sides["engine on transformers' generate"] = through(Engine(engine.loaded, config))
    # A-B-C-C-B-A: load from other processes falls on every side alike.
    plan = list(sides) + list(reversed(sides))
    outputs: dict[str, list] = {name: [] for name in sides}
    seconds: dict[str, float] = dict.fromkeys(sides, 0.0)
    peaks: dict[str, int] = dict.fromkeys(sides, 0)
    for name in plan:
        out, took, peak = timed(sides[name])
        outputs[name].append(out)
        seconds[name] += took / 2
        peaks[name] = max(peaks[name], peak)
    print_peaks("generation", peaks)
    reference = outputs["naive"][0]
    for name, (first, again) in outputs.items():
        assert first == again, f"{name}: greedy output is not deterministic"
        tokens = sum(n for _, n in first)
        same = sum(a[0] == b[0] for a, b in zip(reference, first, strict=True))
        print(
            f"generation: {name}: {tokens} tok in {seconds[name]:.1f}s ({tokens / seconds[name]:.1f} tok/s); "
            f"identical greedy text to naive: {same}/{len(prompts)}"
        )
    naive_rate = sum(n for _, n in reference) / seconds["naive"]
    engine_tokens = sum(n for _, n in outputs["engine"][0])
    return (engine_tokens / seconds["engine"]) / naive_rate, seconds["engine"], engine_tokens


SLOT_STYLES = [
    "",
    "Answer briefly: ",
    "In simple words, ",
    "For a ten-year-old: ",
    "As a teacher would put it: ",
    "Step by step: ",
    "In one paragraph: ",
    "Quickly, ",
]


def many_prompts() -> list[Prompt]:
    """The 16 generation prompts in each of the 8 phrasings of ``SLOT_STYLES``: 128 chat prompts."""
    return [
        Prompt(id=f"{k}-{i}", text=style + text)
        for k, style in enumerate(SLOT_STYLES)
        for i, text in enumerate(GEN_PROMPTS)
    ]


def greedy_abba(engine: Engine, prompts: list[Prompt], params: SamplingParams, field: str, a, b):
    """Greedy decoding of ``prompts`` through the decode loop with config ``field`` = ``a`` against
    ``b``, A-B-B-A: ``(engines by value, (a's outputs, seconds), (b's outputs, seconds), prompts with
    identical text)``; an output is ``(text, tokens)`` per prompt, and both runs of a side must agree."""
    sides = {
        value: Engine(engine.loaded, engine.config.model_copy(update={field: value, "decode_loop": "tether"}))
        for value in (a, b)
    }
    labels = (f"{field}={a}", f"{field}={b}")
    return (sides, *greedy_abba_of(sides[a], sides[b], prompts, params, field, labels))


def greedy_abba_of(
    a: Engine, b: Engine, prompts: list[Prompt], params: SamplingParams, tag: str, labels: tuple[str, str]
):
    """Greedy decoding of ``prompts`` by engine ``a`` against engine ``b``, A-B-B-A: ``((a's outputs,
    seconds), (b's outputs, seconds), prompts with identical text)``."""

    def run(side: Engine):
        return lambda: [(c.text, c.completion_tokens) for c in side.generate(prompts, params, progress=False)]

    (a_1, a_2), a_seconds, (b_1, b_2), b_seconds = abba(run(a), run(b), tag, labels)
    assert a_1 == a_2 and b_1 == b_2, "greedy output is not deterministic"
    same = sum(x[0] == y[0] for x, y in zip(a_1, b_1, strict=True))
    return (a_1, a_seconds), (b_1, b_seconds), same


def prompt_sets() -> list[tuple[str, list[Prompt]]]:
    """The 16 generation prompts, where a step has the fewest rows, and the 128 of ``--only slots``."""
    return [
        ("16 prompts", [Prompt(id=str(i), text=t) for i, t in enumerate(GEN_PROMPTS)]),
        ("128 prompts", many_prompts()),
    ]


def bench_slots(engine: Engine, new_tokens: int, few: int = 16, many: int = 128) -> float:
    """The decode loop with ``few`` against ``many`` slots on 128 prompts, A-B-B-A; returns the ratio
    of tokens/s (many / few)."""
    prompts = many_prompts()
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
    sides, (few_1, few_s), (_, many_s), same = greedy_abba(engine, prompts, params, "decode_slots", few, many)
    tokens = sum(n for _, n in few_1)
    capacity = max(len(sides[few].encode_prompt(p, new_tokens)[0]) for p in prompts) + new_tokens
    for slots, seconds in ((few, few_s), (many, many_s)):
        loop = sides[slots].backend._loop
        fitted = loop.fitting_slots(slots, capacity)
        cache_mb = fitted * capacity * loop.kv_bytes_per_token / 2**20
        print(
            f"slots: {slots} slots ({fitted} within engine.kv_cache_mb): {tokens} tok in {seconds:.1f}s "
            f"({tokens / seconds:.1f} tok/s); K/V cache {cache_mb:.0f} MiB"
        )
    print(f"slots: identical greedy text, {many} slots vs {few}: {same}/{len(prompts)}")
    return few_s / many_s


def bench_head(engine: Engine, new_tokens: int) -> float:
    """The decode loop with the LM head packed for oneDNN (``engine.packed_head``, the default) against
    the plain head, A-B-B-A, on the 16 generation prompts and on the 128 of ``--only slots``; returns
    the time ratio (packed / plain) on the 16, where a step has the fewest rows."""
    plain, packed = (
        Engine(
            engine.loaded, engine.config.model_copy(update={"packed_head": value, "decode_loop": "tether"})
        )
        for value in (False, True)
    )
    return greedy_sides("head", "plain head", plain, "packed head", packed, new_tokens)[0]


def bench_sampling(engine: Engine, new_tokens: int) -> float:
    """Sampled decoding of 128 prompts, transformers' generate against the decode loop, A-B-B-A;
    returns the ratio of tokens/s (decode loop / transformers)."""
    prompts = many_prompts()
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.7, top_p=0.9, seed=0)
    sides = {
        mode: Engine(engine.loaded, engine.config.model_copy(update={"decode_loop": mode}))
        for mode in ("transformers", "tether")
    }

    def run(mode: str):
        return lambda: sum(c.completion_tokens for c in sides[mode].generate(prompts, params, progress=False))

    (hf_1, hf_2), hf_s, (loop_1, loop_2), loop_s = abba(
        run("transformers"), run("tether"), "sampling", ("transformers' generate", "decode loop")
    )
    hf_rate, loop_rate = (hf_1 + hf_2) / 2 / hf_s, (loop_1 + loop_2) / 2 / loop_s
    print(
        f"sampling: transformers' generate, batches of {engine.config.batch_size}: {hf_1} tok in {hf_s:.1f}s "
        f"({hf_rate:.1f} tok/s); decode loop, {engine.config.decode_slots} slots: {loop_1} tok in "
        f"{loop_s:.1f}s ({loop_rate:.1f} tok/s)"
    )
    return loop_rate / hf_rate


def critique_requests(engine: Engine, count: int = 64) -> list[Prompt]:
    """The CAI loop's critique requests for ``count`` harmful train prompts, as configs/cai.yaml builds
    them (chat style, two worked examples), with the model's greedy 48-token answers."""
    from tether.cai.constitution import load_constitution
    from tether.cai.loop import critique_text
    from tether.cai.prompts import load_harmful, make_split

    harmful = load_harmful(["harmbench", "advbench"], exclude_categories=["copyright"], max_chars=600)
    chosen = make_split(harmful, count=count, heldout_fraction=0.5, seed=0).train
    answers = engine.generate(
        [Prompt(id=p.id, text=p.text) for p in chosen], SamplingParams(max_new_tokens=48), progress=False
    )
    constitution = load_constitution("configs/constitution.yaml")
    requests = []
    for p, answer in zip(chosen, answers, strict=True):
        principle = constitution.sample(p.kind, f"{p.id}/round1/pass0", 0)
        examples = constitution.examples_for(principle, p.kind, 2, f"0/{p.id}/0")
        text = critique_text(p.text, answer.text.strip(), principle, examples=examples)
        requests.append(Prompt(id=p.id, text=text))
    return requests


def bench_prefix(engine: Engine, new_tokens: int) -> float:
    """CAI critique requests sampled through the decode loop with prefix reuse off and on, A-B-B-A;
    returns the ratio of times (on / off)."""
    prompts = critique_requests(engine)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.7, top_p=0.9, seed=0)
    sides = {
        mode: Engine(
            engine.loaded,
            engine.config.model_copy(update={"decode_loop": "tether", "prefix_reuse": mode}),
        )
        for mode in ("off", "on")
    }

    def run(mode: str):
        return lambda: sum(c.completion_tokens for c in sides[mode].generate(prompts, params, progress=False))

    (off_1, _), off_s, (on_1, _), on_s = abba(run("off"), run("on"), "prefix", ("reuse off", "reuse on"))
    tokens = sum(len(sides["on"].encode_prompt(p, new_tokens)[0]) for p in prompts)
    reused = sides["on"].backend._loop.reused_tokens // 2  # two timed runs
    print(
        f"prefix: {len(prompts)} critique requests, {tokens} prompt tokens ({reused} reused, "
        f"{reused / tokens:.0%}); reuse off: {off_1} new tok in {off_s:.1f}s; on: {on_1} new tok in {on_s:.1f}s"
    )
    return on_s / off_s


def cpu_bf16_units() -> str:
    from tether.models.load import cpu_flags

    flags = cpu_flags()
    if flags is None:
        return "unknown (no /proc/cpuinfo)"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(found) or "none (bf16 is emulated: expect it slower)"


def greedy_sides(tag: str, a_label: str, a: Engine, b_label: str, b: Engine, new_tokens: int) -> list[float]:
    """Greedy decoding by engine ``a`` against engine ``b``, A-B-B-A, on the 16 and the 128 prompts,
    each set printed as one line; returns b's time over a's per set."""
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
    ratios = []
    for label, prompts in prompt_sets():
        (a_1, a_s), (b_1, b_s), same = greedy_abba_of(
            a, b, prompts, params, f"{tag}: {label}", (a_label, b_label)
        )
        a_tok, b_tok = sum(n for _, n in a_1), sum(n for _, n in b_1)
        print(
            f"{tag}: {label}: {a_label} {a_tok} tok in {a_s:.1f}s ({a_tok / a_s:.1f} tok/s), {b_label} "
            f"{b_tok} tok in {b_s:.1f}s ({b_tok / b_s:.1f} tok/s): {b_label} takes {b_s / a_s:.2f}x "
            f"{a_label}'s time; same greedy text {same}/{len(prompts)}"
        )
        ratios.append(b_s / a_s)
    return ratios


def bench_dtype(engine: Engine, new_tokens: int) -> float:
    """Greedy decoding in bfloat16 against float32 through the decode loop, A-B-B-A, on the 16 and
    the 128 prompts; returns the time ratio (bf16 / fp32) on the 128, where a step has the most rows."""
    print(f"dtype: CPU bf16 units: {cpu_bf16_units()}")
    config = engine.config.model_copy(update={"decode_loop": "tether"})
    fp32 = Engine(engine.loaded, config)
    bf16 = Engine.from_spec("default", config.model_copy(update={"dtype": "bfloat16"}))
    return greedy_sides("dtype", "float32", fp32, "bfloat16", bf16, new_tokens)[-1]


def random_lora_model(lora, seed: int = 0):
    """The default model, freshly loaded, with LoRA modules of ``lora`` (a ``LoRAConfig``) whose B
    factors are drawn small and seeded, so the model still writes text but the adapter does work."""
    from peft import get_peft_model

    from tether.train.lora import peft_config

    torch.manual_seed(seed)
    model = get_peft_model(Engine.from_spec("default").model, peft_config(lora))
    for module in model.modules():
        if hasattr(module, "lora_B"):
            for layer in module.lora_B.values():
                torch.nn.init.normal_(layer.weight, std=0.002)
    return model


def random_adapter(directory: Path, seed: int = 0) -> Path:
    """A LoRA adapter on the default model shaped like Tether's SFT adapters (r 16, alpha 32, every
    linear module), saved with seeded random weights (:func:`random_lora_model`)."""
    from tether.train.lora import LoRAConfig, write_base_file

    random_lora_model(LoRAConfig(), seed).save_pretrained(directory)
    write_base_file(directory, "default")
    return directory


def bench_adapter(engine: Engine, new_tokens: int, adapter: str | None = None) -> float:
    """Greedy decoding through a LoRA adapter merged into its base (``engine.merge_adapter``, the
    default) against the adapter's modules unmerged, A-B-B-A, on the 16 and the 128 prompts; returns
    the time ratio (merged / unmerged) on the 16, where a step has the fewest rows."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        spec = adapter or str(random_adapter(Path(scratch) / "adapter"))
        print(f"adapter: {adapter or 'seeded random LoRA, r 16 on every linear module'}")
        config = engine.config.model_copy(update={"decode_loop": "tether"})
        merged = Engine.from_spec(spec, config)
        unmerged = Engine.from_spec(spec, config.model_copy(update={"merge_adapter": False}))
    return greedy_sides("adapter", "unmerged", unmerged, "merged", merged, new_tokens)[0]


def bench_rollout(engine: Engine, new_tokens: int, steps: int = 3) -> float:
    """PPO's rollouts as ``configs/rlhf.yaml`` draws them (4 BoolQ summarization prompts a step, 2
    samples each, temperature 0.7, top-p 1, prompts in order on a fixed plan) from a policy whose LoRA
    modules run unmerged, as PPO's trainable adapter does: transformers' generate against the decode
    loop, ``steps`` steps a side, A-B-B-A; returns the time ratio (decode loop / transformers)."""
    from dataclasses import replace

    from tether.rlhf.documents import load_boolq_documents
    from tether.rlhf.pipeline import ppo_prompts
    from tether.train.lora import LoRAConfig

    policy = random_lora_model(LoRAConfig(dropout=0.0))
    policy.eval()
    loaded = replace(engine.loaded, model=policy)
    sides = {
        mode: Engine(loaded, engine.config.model_copy(update={"decode_loop": mode}))
        for mode in ("transformers", "tether")
    }
    prompts = ppo_prompts(load_boolq_documents()[: 4 * steps])

    def run(mode: str):
        def rollouts() -> int:
            tokens = 0
            for step in range(steps):
                params = SamplingParams(
                    max_new_tokens=new_tokens, temperature=0.7, top_p=1.0, n=2, seed=step + 1
                )
                out = sides[mode].generate(
                    prompts[4 * step : 4 * step + 4], params, progress=False, batch_size=engine.config.batch_size,
                    sort_by_length=False,
                )  # fmt: skip
                tokens += sum(c.completion_tokens for c in out)
            return tokens

        return rollouts

    (hf_tok, _), hf_s, (loop_tok, _), loop_s = abba(
        run("transformers"), run("tether"), "rollout", ("transformers' generate", "decode loop")
    )
    lengths = [len(engine.tokenizer(p.text)["input_ids"]) for p in prompts]
    print(
        f"rollout: {steps} steps of 4 prompts x 2 samples (prompts {sum(lengths) / len(lengths):.0f} tokens on "
        f"average), unmerged LoRA policy: transformers' generate {hf_tok} tok in {hf_s:.1f}s "
        f"({hf_tok / hf_s:.1f} tok/s), decode loop {loop_tok} tok in {loop_s:.1f}s ({loop_tok / loop_s:.1f} tok/s): "
        f"the decode loop takes {loop_s / hf_s:.2f}x transformers' time"
    )
    return loop_s / hf_s


# --only NAME: (comparison, printed ratio name, how the ratio reads).
DECODE_COMPARISONS = {
    "slots": (
        bench_slots,
        "generation_128_slots_over_16_tok_per_s",
        "tokens/s with 128 decode slots / with 16; above 1: more slots are faster",
    ),
    "sampling": (
        bench_sampling,
        "sampling_decode_loop_over_transformers_tok_per_s",
        "tokens/s of the decode loop / of transformers' generate; above 1: the loop is faster",
    ),
    "prefix": (
        bench_prefix,
        "critique_time_prefix_reuse_over_none",
        "time with engine.prefix_reuse=on / with off; below 1: reuse is faster",
    ),
    "dtype": (
        bench_dtype,
        "generation_time_bfloat16_over_float32",
        "128 prompts: time with engine.dtype=bfloat16 / with float32; below 1: bfloat16 is faster",
    ),
    "adapter": (
        bench_adapter,
        "generation_time_adapter_merged_over_unmerged",
        "16 prompts: time with engine.merge_adapter=true / with false; below 1: merging is faster",
    ),
    "rollout": (
        bench_rollout,
        "ppo_rollout_time_decode_loop_over_transformers",
        "PPO-shaped sampling: time in the decode loop / in transformers' generate; below 1: the loop is faster",
    ),
    "head": (
        bench_head,
        "generation_time_packed_head_over_plain",
        "16 prompts: time with engine.packed_head=true / with false; below 1: the packed head is faster",
    ),
}


def scoring_items(n: int) -> list[ScoreRequest]:
    from tether.data import sources
    from tether.evals import formats

    half = n // 2
    mmlu = sources.stratified_sample(sources.load_mmlu(), per_category=None, limit=half, seed=0)
    hella = sources.stratified_sample(sources.load_hellaswag(), per_category=None, limit=n - half, seed=0)
    return [formats.mmlu_request(x) for x in mmlu] + [formats.hellaswag_request(x) for x in hella]


def naive_score(engine: Engine, requests: list[ScoreRequest], dtype=torch.float32) -> list[list[float]]:
    """One forward per (context, continuation) and a full-vocabulary log-softmax in ``dtype``: float32
    (as lm-eval does) is the timed side; float64 is the reference the engine is checked against. A
    float32 log-softmax over 49k logits is off by about 1e-5 a token, so over a 50-token HellaSwag
    ending float32 itself misses the float64 sum by up to 5e-4."""
    model = engine.model
    out = []
    with torch.inference_mode():
        for req in requests:
            enc = engine.encode_score(req)
            row = []
            for cont in enc.continuation_ids:
                ids = torch.tensor([enc.context_ids + cont])
                logprobs = torch.log_softmax(model(input_ids=ids).logits.to(dtype), dim=-1)[0]
                start = len(enc.context_ids)
                targets = ids[0, start:]
                row.append(float(logprobs[start - 1 : -1].gather(-1, targets[:, None]).sum()))
            out.append(row)
    return out


def bench_scoring(engine: Engine, n: int) -> tuple[float, float, int]:
    requests = scoring_items(n)
    (naive, _), naive_s, (ours, _), ours_s = abba(
        lambda: naive_score(engine, requests),
        lambda: engine.score(requests, progress=False),
        "scoring",
        ("one forward per choice", "engine"),
    )

    def worst(a: list[list[float]], b: list[list[float]]) -> float:
        return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))

    exact = naive_score(engine, requests, torch.float64)  # untimed
    engine_error = worst([o.logprobs for o in ours], exact)
    tokens = sum(
        len(engine.encode_score(r).context_ids) + sum(len(c) for c in engine.encode_score(r).continuation_ids)
        for r in requests
    )
    print(
        f"scoring: {len(requests)} items x 4 choices; naive {naive_s:.1f}s ({len(requests) / naive_s:.2f} items/s); "
        f"engine {ours_s:.1f}s ({len(requests) / ours_s:.2f} items/s); max |delta loglik| from a float64 "
        f"log-softmax of the same forward: engine {engine_error:.2e}, naive's float32 log-softmax "
        f"{worst(naive, exact):.2e}"
    )
    if engine_error > 1e-4:
        print("scoring: FAILED equality check (tolerance 1e-4 against float64)", file=sys.stderr)
    return naive_s / ours_s, ours_s, tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--only",
        choices=("generation", "scoring", *DECODE_COMPARISONS),
        help="Run one comparison (default: generation and scoring).",
    )
    parser.add_argument(
        "--adapter", help="--only adapter: a trained LoRA adapter directory (default: a seeded random one)."
    )
    parser.add_argument(
        "--compare-transformers",
        action="store_true",
        help="Also time the engine on transformers' batched generate (engine.decode_loop=transformers).",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TETHER_NO_PROGRESS", "1")
    print(f"before: {load()}", flush=True)
    engine = Engine.from_spec("default")
    params = engine.loaded.num_parameters
    peak = matmul_peak_gflops(args.threads)
    print(f"torch.mm peak: {peak:.1f} GFLOP/s ({args.threads} threads)")
    if args.only in DECODE_COMPARISONS:
        bench, name, reading = DECODE_COMPARISONS[args.only]
        extra = {"adapter": args.adapter} if args.only == "adapter" else {}
        print(f"{name}: {bench(engine, args.new_tokens, **extra):.2f}x ({reading})")
        print(f"after: {load()}")
        return
    if args.only != "scoring":
        gen_ratio, gen_s, gen_tokens = bench_generation(engine, args.new_tokens, args.compare_transformers)
        again = matmul_peak_gflops(args.threads)
        print(f"torch.mm peak after generation: {again:.1f} GFLOP/s; the higher one counts")
        peak = max(peak, again)
        print(
            f"generation_engine_over_sequential_tok_per_s: {gen_ratio:.2f}x "
            "(engine tokens/s / one generate per prompt; above 1: the engine is faster)"
        )
        # ~2 FLOPs per parameter per generated token (prompt prefill excluded: a lower bound).
        achieved = 2 * params * gen_tokens / gen_s / 1e9
        print(
            f"generation_fraction_of_mm_peak: {achieved / peak:.2f} "
            f"({achieved:.1f} GFLOP/s of {peak:.1f} GFLOP/s measured torch.mm peak, "
            f"{min(engine.config.decode_slots, len(GEN_PROMPTS))} sequences in flight)"
        )
    if args.only != "generation":
        score_ratio, score_s, score_tokens = bench_scoring(engine, args.items)
        print(f"scoring_prefix_shared_vs_per_choice: {score_ratio:.2f}x")
        print(f"scoring_gflops_vs_mm_peak: {2 * params * score_tokens / score_s / 1e9 / peak:.2f}")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
