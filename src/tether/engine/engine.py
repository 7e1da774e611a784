"""The Engine: the one place where models run. Every stage generates and scores through it."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import replace

import torch

from tether.config import EngineConfig
from tether.engine.backend import Backend, EchoScores, EncodedScore
from tether.engine.decode import resolve_step
from tether.engine.hf import HFBackend
from tether.engine.packing import request_tokens
from tether.engine.types import (
    Completion,
    Prompt,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    prompt_history,
)
from tether.errors import DataError, TetherError
from tether.models import LoadedModel, load
from tether.progress import progress_bar
from tether.runs import NULL_TRACER, Tracer


class PromptTooLongError(DataError):
    """A prompt does not fit the context window and truncation is set to 'error'."""


def make_backend(loaded: LoadedModel, config: EngineConfig) -> Backend:
    if config.backend == "hf":
        return HFBackend(
            loaded.model,
            loaded.tokenizer,
            loaded.device,
            resolve_step(config.decode_step, loaded.device),
            max_row_tokens=config.score_row_tokens,
            kv_cache_bytes=config.kv_cache_mb * 2**20,
            prefix_reuse=config.prefix_reuse,
            packed_head=config.packed_head,
            prefix_cache_bytes=config.prefix_cache_mb * 2**20,
        )
    if config.backend == "vllm":
        from tether.engine.vllm_backend import VLLMBackend, load_llm, merged_model_dir

        options = config.vllm.model_dump(exclude={"seed"})
        llm = load_llm(merged_model_dir(loaded), dtype=config.dtype, seed=config.vllm.seed, options=options)
        return VLLMBackend(llm, loaded.tokenizer, HFBackend.eos_ids_of(loaded.model, loaded.tokenizer))
    raise TetherError(
        f"engine backend '{config.backend}' is not available here",
        where="engine.backend",
        hint="use engine.backend=hf (or vllm on a GPU); a served model is a spec openai:NAME",
    )


def merged_adapter(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with its LoRA adapter merged into the base's weights, so no step runs the adapter's
    per-module extra matmuls.

    In float32 that is the same model to the last bits (logits within about 3e-4; an audit of the
    ``configs/tax.yaml`` adapter gave the same result on all 640 items), so the fingerprint stays the
    adapter's. In a half-precision dtype the sum W + s·BA is rounded to that dtype once, while PEFT
    unmerged adds a float32 delta every step: a slightly different model (46 of those 640 items
    differed, the rates within noise), so its results are cached apart (``…+merged``)."""
    fingerprint = loaded.fingerprint if loaded.dtype == torch.float32 else f"{loaded.fingerprint}+merged"
    return replace(loaded, model=loaded.model.merge_and_unload().eval(), fingerprint=fingerprint)


class Engine:
    """Batched generation and log-likelihood scoring over one loaded model, with traces."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig | None = None, tracer: Tracer | None = None):
        self.loaded = loaded
        self.config = config or EngineConfig()
        self.tracer = tracer or NULL_TRACER
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.backend = make_backend(loaded, self.config)

    @classmethod
    def from_spec(cls, spec: str, config: EngineConfig | None = None, tracer: Tracer | None = None) -> Engine:
        config = config or EngineConfig()
        # With vLLM on the GPU, the transformers copy only tokenises (and serves training and
        # interpretability): it stays on the CPU instead of taking GPU memory beside vLLM.
        if config.backend == "vllm":
            from tether.engine.vllm_backend import require_vllm

            require_vllm()
            return cls(load(spec, device="cpu", dtype="auto"), config, tracer)
        # An explicit dtype holds on a CPU too: bfloat16 pays on CPUs with bf16 units (README "Engine").
        loaded = load(spec, device=config.device, dtype=config.dtype)
        if config.merge_adapter and loaded.adapter_path is not None:
            loaded = merged_adapter(loaded)
        return cls(loaded, config, tracer)

    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def fingerprint(self) -> str:
        return self.loaded.fingerprint

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def has_chat_template(self) -> bool:
        return self.loaded.has_chat_template

    @property
    def eos_token_ids(self) -> list[int]:
        """Every token id that ends a completion (the tokenizer's and the generation config's)."""
        return list(self.backend.eos_ids)

    # ------------------------------------------------------------------ encoding

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees for a prompt (chat template applied when asked and available)."""
        history = prompt_history(prompt)
        if prompt.chat and self.loaded.has_chat_template:
            messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
            messages += history
            messages.append({"role": "user", "content": prompt.text})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in history)
        text += f"User: {prompt.text}\n\nAssistant:" if history else prompt.text
        return f"{prompt.system}\n\n{text}" if prompt.system else text

    @property
    def sequence_limit(self) -> int:
        """Tokens a sequence (prompt + new tokens) may hold: the context window, or the static KV
        cache's ``engine.cache_tokens`` when that is smaller."""
        window = self.loaded.context_length
        return min(window, self.config.cache_tokens) if self.config.cache_tokens else window

    def encode_prompt(self, prompt: Prompt, max_new_tokens: int) -> tuple[list[int], bool]:
        text = self.render(prompt)
        ids = self.tokenizer(text, add_special_tokens=not (prompt.chat and self.loaded.has_chat_template))[
            "input_ids"
        ]
        limit = self.sequence_limit
        cache_bound = limit < self.loaded.context_length
        what = "static KV cache" if cache_bound else "context window"
        budget = limit - max_new_tokens
        if budget <= 0:
            raise PromptTooLongError(
                f"max_new_tokens={max_new_tokens} leaves no room in the {limit}-token {what}"
            )
        if len(ids) <= budget:
            return ids, False
        if self.config.truncation == "error":
            raise PromptTooLongError(
                f"prompt '{prompt.id}' has {len(ids)} tokens; at most {budget} fit "
                f"({limit}-token {what} - {max_new_tokens} new tokens)",
                hint="shorten it, lower max_new_tokens, "
                + ("raise engine.cache_tokens, " if cache_bound else "")
                + "or set engine.truncation=left to keep its last tokens",
            )
        warnings.warn(
            f"prompt '{prompt.id}' truncated from {len(ids)} to its last {budget} tokens to fit the {what}",
            stacklevel=3,
        )
        return ids[-budget:], True

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | None = None,
        *,
        stage: str = "",
        progress: bool = True,
        batch_size: int | None = None,
        sort_by_length: bool = True,
    ) -> list[Completion]:
        """Complete every prompt ``params.n`` times; results come back in input order.

        Prompts are taken longest first (the decode loop takes long prompts in token order where
        it reuses shared prefixes: ``engine.prefix_reuse``). Tether's decode loop
        (``engine.decode_loop``) keeps ``engine.decode_slots`` sequences in flight (fewer when
        ``engine.kv_cache_mb`` says so) and refills a finished sequence's slot with the next prompt
        at once; transformers' generate runs
        ``engine.batch_size`` sequences a batch, sampling seeded per batch. ``batch_size`` (prompts in
        flight) and ``sort_by_length=False`` fix the plan instead: a caller that must reproduce
        earlier samples (PPO's rollouts) keeps its plan."""
        params = params or SamplingParams()
        encoded = [self.encode_prompt(p, params.max_new_tokens) for p in prompts]
        ids = [e[0] for e in encoded]
        order = list(range(len(prompts)))
        decode_loop = self._uses_decode_loop(params, ids)
        if sort_by_length and decode_loop:
            order = self.backend.decode_order(ids, params)
        elif sort_by_length:
            order.sort(key=lambda i: -len(ids[i]))
        slots = batch_size * params.n if batch_size is not None else self.config.decode_slots
        if batch_size is None:
            batch_size = (
                max(1, self.config.batch_size // params.n) if params.n > 1 else self.config.batch_size
            )
        results: dict[int, list[Completion]] = {}
        chat = any(p.chat for p in prompts) and self.loaded.has_chat_template
        operation = "chat" if chat else "text_completion"

        def collect(
            i: int, samples, latency: float, kind: str, start_ns: int, end_ns: int, share: float
        ) -> None:
            results[i] = [
                self._completion(prompts[i], encoded[i], k, sample, params, latency, stage)
                for k, sample in enumerate(samples)
            ]
            self.tracer.item_span(
                f"{operation} {self.name}",
                start_ns,
                end_ns,
                {
                    "gen_ai.operation.name": operation,
                    "gen_ai.request.model": self.name,
                    "gen_ai.usage.input_tokens": len(ids[i]),
                    "gen_ai.usage.output_tokens": sum(c.completion_tokens for c in results[i]),
                    "gen_ai.response.finish_reasons": [c.finish_reason for c in results[i]],
                    "tether.item.id": prompts[i].id,
                    "tether.stage": stage,
                    "tether.latency.kind": kind,
                    "tether.batch_share_s": round(share, 6) if kind == "batch" else None,
                    "tether.attack.id": getattr(prompts[i], "attack_id", None),
                },
            )

        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": self.name,
            # Which weights answered: a red-team attacker runs in bfloat16 beside a float32 target.
            "tether.model.dtype": str(self.loaded.dtype).removeprefix("torch."),
            "gen_ai.request.temperature": params.temperature,
            "gen_ai.request.top_p": params.top_p,
            "gen_ai.request.max_tokens": params.max_new_tokens,
            "gen_ai.request.seed": params.seed,
            "gen_ai.request.choice.count": params.n,
            "tether.stage": stage,
            "tether.batch.prompts": len(prompts),
        }
        reused_before = getattr(self.backend, "reused_prompt_tokens", 0)
        with (
            self.tracer.span(f"{operation} {self.name}", attributes, client=True) as call,
            progress_bar(f"generate {stage or ''}".strip(), total=len(prompts), enabled=progress) as bar,
        ):
            if decode_loop:
                stream = self.backend.decode([ids[i] for i in order], params, slots, keys=order)
                for position, samples, latency in stream:
                    # The loop yields a prompt as it finishes, with its time since admission: its own span.
                    end_ns = time.time_ns()
                    collect(
                        order[position], samples, latency, "own", end_ns - int(latency * 1e9), end_ns, latency
                    )
                    bar.advance(1)
            else:
                for batch_index, start in enumerate(range(0, len(order), batch_size)):
                    chunk = order[start : start + batch_size]
                    began, start_ns = time.perf_counter(), time.time_ns()
                    samples = self.backend.generate([ids[i] for i in chunk], params, batch_index)
                    latency = time.perf_counter() - began
                    end_ns = time.time_ns()
                    # One forward serves the whole batch: each item gets its share, its span the batch's times.
                    share = latency / len(chunk)
                    for i, prompt_samples in zip(chunk, samples, strict=True):
                        collect(i, prompt_samples, share, "batch", start_ns, end_ns, share)
                    bar.advance(len(chunk))
            if call is not None:
                call.set_attribute("gen_ai.usage.input_tokens", sum(map(len, ids)))
                call.set_attribute(
                    "gen_ai.usage.output_tokens",
                    sum(c.completion_tokens for cs in results.values() for c in cs),
                )
                if decode_loop:  # prompt tokens prefilled on earlier keys and values (engine.prefix_reuse)
                    reused = getattr(self.backend, "reused_prompt_tokens", 0) - reused_before
                    call.set_attribute("tether.prefix.reused_tokens", reused)
        return [c for i in range(len(prompts)) for c in results[i]]

    def _uses_decode_loop(self, params: SamplingParams, prompts: list[list[int]]) -> bool:
        """Tether's decode loop runs greedy decoding ('auto') or all decoding ('tether'), on a model
        it supports; everything else goes through transformers' generate."""
        choice = self.config.decode_loop
        if choice == "transformers" or (choice == "auto" and params.temperature > 0) or not prompts:
            return False
        fits = getattr(self.backend, "decode_loop_fits", None)
        return bool(fits and fits(max(map(len, prompts)) + params.max_new_tokens))

    def _completion(
        self, prompt: Prompt, encoded, index: int, sample, params: SamplingParams, latency: float, stage: str
    ):
        text = self.tokenizer.decode(sample.token_ids, skip_special_tokens=True)
        finish = "stop" if sample.hit_eos else "length"
        for stop in params.stop:
            at = text.find(stop)
            if at != -1:
                text, finish = text[:at], "stop"
        completion = Completion(
            prompt_id=prompt.id,
            sample_index=index,
            text=text,
            prompt_tokens=len(encoded[0]),
            completion_tokens=len(sample.token_ids),
            finish_reason=finish,
            latency_s=round(latency, 4),
            truncated_prompt=encoded[1],
            prompt_token_ids=encoded[0],
            token_ids=sample.token_ids,
        )
        self.tracer.record(
            kind="generate",
            stage=stage,
            model=self.name,
            prompt_id=prompt.id,
            prompt=prompt.text,
            **({"history": prompt_history(prompt)} if prompt_history(prompt) else {}),
            output=text,
            sample_index=index,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            finish_reason=finish,
            latency_s=completion.latency_s,
            temperature=params.temperature,
        )
        return completion

    # ------------------------------------------------------------------ scoring

    def encode_score(self, request: ScoreRequest) -> EncodedScore:
        """lm-evaluation-harness's pairing: trailing spaces of the context move to the continuation,
        the continuation's tokens are those of (context + continuation) past the context's tokens,
        and an empty context is replaced by the end-of-text token."""
        context = request.context
        encode = self.tokenizer.encode
        conts = []
        stripped = context.rstrip(" ")
        moved = context[len(stripped) :]
        if not stripped:
            context_ids = [self.tokenizer.eos_token_id]
            for cont in request.continuations:
                conts.append(encode(moved + cont, add_special_tokens=False))
        else:
            context_ids = encode(stripped, add_special_tokens=False)
            for cont in request.continuations:
                whole = encode(stripped + moved + cont, add_special_tokens=False)
                conts.append(whole[len(context_ids) :])
        for cont_text, ids in zip(request.continuations, conts, strict=True):
            if not ids:
                raise DataError(
                    f"continuation {cont_text!r} encodes to no tokens", where=f"item {request.id}"
                )
        limit = self.loaded.context_length
        longest = max(len(c) for c in conts)
        if len(context_ids) + longest > limit:
            context_ids = context_ids[-(limit - longest) :]  # keep the end of the context, like lm-eval
        return EncodedScore(context_ids=context_ids, continuation_ids=conts)

    def score(
        self, requests: Sequence[ScoreRequest], *, stage: str = "", progress: bool = True
    ) -> list[ScoreResult]:
        """Sum of log-probs of each continuation given its context.

        Requests are ordered so that shared context prefixes sit side by side (the backend packs
        neighbours into one prefix tree, running a shared prefix once), with requests larger than
        a packed row first, longest first, each alone in its row. A batch takes requests while
        their tokens (context plus continuations but their last token) stay within
        ``engine.score_batch_tokens`` and their number within ``engine.score_batch_size``."""
        encoded = [self.encode_score(r) for r in requests]
        sizes = [request_tokens(e) for e in encoded]
        row_cap = self.config.score_row_tokens
        order = sorted(
            range(len(requests)),
            key=lambda i: (
                sizes[i] <= row_cap,
                -sizes[i] if sizes[i] > row_cap else 0,
                encoded[i].context_ids,
            ),
        )
        batches: list[list[int]] = []
        for i in order:
            if (
                batches
                and len(batches[-1]) < self.config.score_batch_size
                and sum(sizes[j] for j in batches[-1]) + sizes[i] <= self.config.score_batch_tokens
            ):
                batches[-1].append(i)
            else:
                batches.append([i])
        out: dict[int, ScoreResult] = {}
        name = f"score {self.name}"
        attributes = {
            "gen_ai.operation.name": "score",
            "gen_ai.request.model": self.name,
            "tether.stage": stage,
        }
        with (
            self.tracer.span(name, {**attributes, "tether.batch.items": len(requests)}, client=True) as call,
            progress_bar(f"score {stage}".strip(), total=len(requests), enabled=progress) as bar,
        ):
            for chunk in batches:
                began, start_ns = time.perf_counter(), time.time_ns()
                scores = self.backend.score([encoded[i] for i in chunk])
                latency = time.perf_counter() - began
                end_ns = time.time_ns()
                for i, s in zip(chunk, scores, strict=True):
                    tokens = len(encoded[i].context_ids) + sum(map(len, encoded[i].continuation_ids))
                    self.tracer.item_span(
                        name,
                        start_ns,
                        end_ns,
                        {
                            **attributes,
                            "gen_ai.usage.input_tokens": tokens,
                            "gen_ai.usage.output_tokens": 0,
                            "tether.item.id": requests[i].id,
                            "tether.latency.kind": "batch",
                            "tether.batch_share_s": round(latency / len(chunk), 6),
                        },
                    )
                    req = requests[i]
                    out[i] = ScoreResult(
                        id=req.id,
                        logprobs=s.logprobs,
                        num_tokens=[len(c) for c in encoded[i].continuation_ids],
                        num_chars=[len(c) for c in req.continuations],
                        is_greedy=s.is_greedy,
                    )
                    self.tracer.record(
                        kind="score",
                        stage=stage,
                        model=self.name,
                        item_id=req.id,
                        context_tokens=len(encoded[i].context_ids),
                        logprobs=s.logprobs,
                        latency_s=round(latency / len(chunk), 5),
                    )
                bar.advance(len(chunk))
            if call is not None:
                call.set_attribute("gen_ai.usage.input_tokens", sum(sizes))
                call.set_attribute("gen_ai.usage.output_tokens", 0)
        return [out[i] for i in range(len(requests))]

    def echo(self, sequences: Sequence[list[int]], *, stage: str = "") -> list[EchoScores]:
        """Per-token log-probs of whole token sequences and the greedy token at every position
        (``tether serve``'s ``echo``), batched like :meth:`score`: up to ``engine.score_batch_size``
        sequences and ``engine.score_batch_tokens`` tokens a forward."""
        limit = self.loaded.context_length
        for seq in sequences:
            if not seq:
                raise DataError("an empty token sequence has no log-probs")
            if len(seq) >= limit:
                raise PromptTooLongError(f"{len(seq)} tokens do not fit the {limit}-token context window")
        batches: list[list[int]] = []
        size = 0
        for i, seq in enumerate(sequences):
            if (
                batches
                and len(batches[-1]) < self.config.score_batch_size
                and size + len(seq) <= self.config.score_batch_tokens
            ):
                batches[-1].append(i)
                size += len(seq)
            else:
                batches.append([i])
                size = len(seq)
        out: dict[int, EchoScores] = {}
        attributes = {
            "gen_ai.operation.name": "echo",
            "gen_ai.request.model": self.name,
            "gen_ai.usage.input_tokens": sum(map(len, sequences)),
            "gen_ai.usage.output_tokens": 0,
            "tether.stage": stage,
            "tether.batch.items": len(sequences),
        }
        with self.tracer.span(f"echo {self.name}", attributes, client=True):
            for chunk in batches:
                for i, scores in zip(
                    chunk, self.backend.echo([list(sequences[i]) for i in chunk]), strict=True
                ):
                    out[i] = scores
        return [out[i] for i in range(len(sequences))]
