"""The transformers backend: batched generation and prefix-sharing log-likelihood scoring."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from tether.engine.backend import EchoScores, EncodedScore, Sample, TokenScores
from tether.engine.decode import (
    DecodeLoop,
    PrefixReuse,
    StepMode,
    StopMatcher,
    admission_order,
    reuses_prefixes,
)
from tether.engine.packing import pack
from tether.engine.types import SamplingParams
from tether.errors import TetherError
from tether.models.head import contiguous_head_input
from tether.models.padding import left_pad

# Scoring's LM head runs this many logits at a time (fp32: 100 MB): 512 rows of SmolLM2's 49k
# vocabulary, whose head matmul ran 1.7x faster per row at 512 rows than at 64 on a 2-core CPU;
# a model with a larger vocabulary gets fewer rows, not more memory.
HEAD_CHUNK_LOGITS = 512 * 49152


def _unwrap(model):
    """The plain causal LM inside a PEFT wrapper (adapters stay active: they live in its modules)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _is_plain_llama(decoder) -> bool:
    """Whether ``_llama_forward`` reproduces this decoder: transformers' own Llama classes, every
    layer one attention with rotary embeddings and one gated MLP (PEFT adapters inside the linear
    layers are fine: they are called as modules)."""
    try:
        from transformers.models.llama import modeling_llama as llama
    except ImportError:  # pragma: no cover - transformers always ships Llama
        return False
    return (
        type(decoder) is llama.LlamaModel
        and all(type(layer) is llama.LlamaDecoderLayer for layer in decoder.layers)
        and all(type(layer.self_attn) is llama.LlamaAttention for layer in decoder.layers)
        and all(type(layer.mlp) is llama.LlamaMLP for layer in decoder.layers)
        and type(decoder.norm) is llama.LlamaRMSNorm
    )


def _rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm.forward, step for step (same rounding)."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama's rotary embedding, ``x * cos + rotate_half(x) * sin``, on each half directly
    (``cos``/``sin`` hold the half-width frequencies; their two halves are equal): the same
    products and sums as transformers' version without its ``cat``/``neg`` copies."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.empty_like(x)
    torch.sub(x1 * cos, x2 * sin, out=out[..., :half])
    torch.add(x2 * cos, x1 * sin, out=out[..., half:])
    return out


def _llama_forward(
    decoder, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, real: torch.Tensor
) -> torch.Tensor:
    """The final hidden states of transformers' ``LlamaModel`` for the real (non-padding) nodes of
    packed rows, ``real`` being their flat indices into ``rows * width``; returns ``(len(real), d)``.

    Savings on CPU against calling the module: only the attention sees the rows' padded layout;
    the embedding, norms, projections and MLP run on the real nodes alone (right-padding to the
    widest row is about a sixth of a batch's cells). SDPA gets the additive 4-D mask prepared once
    and the grouped key/value heads as they are (``enable_gqa``; transformers copies them per query
    head when there is a mask), rotary embeddings skip the half-rotation copies, and the residual
    adds are in place."""
    rows, width = ids.shape
    x = decoder.embed_tokens(ids.reshape(-1)[real])
    cos, sin = decoder.rotary_emb(x[None], positions.reshape(-1)[real][None])
    half = cos.shape[-1] // 2
    cos, sin = cos[0, :, None, :half], sin[0, :, None, :half]  # (nodes, 1, half): broadcast over heads

    def padded(t: torch.Tensor) -> torch.Tensor:
        """(nodes, heads, head_dim) -> (rows, heads, width, head_dim), zeros at the padding."""
        out = t.new_zeros(rows * width, *t.shape[1:])
        out[real] = t
        return out.view(rows, width, *t.shape[1:]).transpose(1, 2)

    nodes = x.shape[0]
    for layer in decoder.layers:
        attn = layer.self_attn
        h = _rms_norm(layer.input_layernorm, x)
        q = attn.q_proj(h).view(nodes, -1, attn.head_dim)
        k = attn.k_proj(h).view(nodes, -1, attn.head_dim)
        v = attn.v_proj(h).view(nodes, -1, attn.head_dim)
        o = torch.nn.functional.scaled_dot_product_attention(
            padded(_rotate(q, cos, sin)),
            padded(_rotate(k, cos, sin)),
            padded(v),
            attn_mask=mask,
            scale=attn.scaling,
            enable_gqa=q.shape[1] != k.shape[1],
        )
        x = x + attn.o_proj(o.transpose(1, 2).reshape(rows * width, -1)[real])
        h = _rms_norm(layer.post_attention_layernorm, x)
        mlp = layer.mlp
        x += mlp.down_proj(mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h))
    return _rms_norm(decoder.norm, x)


class StopOnStrings:
    """Stops a row once its *generated* text contains a stop string. (transformers' own
    ``stop_strings`` also matches across the prompt's tail, e.g. a chat template's final newline
    plus one generated newline ends a "\\n\\n" stop at once.) Each row's text is followed
    incrementally (:class:`StopMatcher`): a step decodes only the rows' new tokens."""

    def __init__(self, prompt_width: int, stops: list[str], tokenizer):
        self.prompt_width = prompt_width
        self.stops = list(stops)
        self.tokenizer = tokenizer
        self.matchers: list[StopMatcher] = []

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        if not self.matchers:
            self.matchers = [StopMatcher(self.stops, self.tokenizer) for _ in range(input_ids.shape[0])]
        seen = len(self.matchers[0].tokens)  # every row gains one token a step
        new_tokens = input_ids[:, self.prompt_width + seen :].tolist()
        done = []
        for matcher, row in zip(self.matchers, new_tokens, strict=True):
            for token in row:
                matcher.push(token)
            done.append(matcher.hit)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFBackend:
    def __init__(
        self,
        model,
        tokenizer,
        device: torch.device,
        decode_step: StepMode = "eager",
        *,
        max_row_tokens: int = 512,
        head_chunk: int | None = None,
        kv_cache_bytes: int | None = None,
        prefix_reuse: PrefixReuse = "auto",
        packed_head: bool = True,
        prefix_cache_bytes: int = 0,
    ):
        self.model = model
        self.max_row_tokens = max_row_tokens  # scoring: prefix-tree nodes per packed row
        self.head_chunk = head_chunk  # scoring: LM-head rows per chunk (None: HEAD_CHUNK_LOGITS / vocab)
        self.tokenizer = tokenizer
        self.device = device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = self._eos_ids()
        causal_lm = _unwrap(model)
        self._decoder = causal_lm.get_decoder()
        self._head = causal_lm.get_output_embeddings()
        if self.head_chunk is None:
            self.head_chunk = max(1, HEAD_CHUNK_LOGITS // self._head.weight.shape[0])
        self._softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
        self._loop: DecodeLoop | None = None
        self._decode_step = decode_step
        self._kv_cache_bytes = kv_cache_bytes
        self._prefix_reuse = prefix_reuse
        self._packed_head = packed_head
        self._prefix_cache_bytes = prefix_cache_bytes
        self._llama_layers = _is_plain_llama(self._decoder)

    @property
    def reused_prompt_tokens(self) -> int:
        """Prompt tokens whose keys and values the decode loop took from earlier prefills, so far."""
        return self._loop.reused_tokens if self._loop is not None else 0

    def _eos_ids(self) -> list[int]:
        return self.eos_ids_of(self.model, self.tokenizer)

    @staticmethod
    def eos_ids_of(model, tokenizer) -> list[int]:
        """Every id that ends a completion: the generation config's and the tokenizer's."""
        ids = set()
        gen_config = getattr(model, "generation_config", None)
        configured = getattr(gen_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        return sorted(ids)

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(
        self, prompts: list[list[int]], params: SamplingParams, batch_index: int
    ) -> list[list[Sample]]:
        input_ids, attention_mask = left_pad(prompts, self.pad_id, self.device)
        sampling = params.temperature > 0
        kwargs = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            num_return_sequences=params.n,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
        )
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
            # One seed per batch keeps results reproducible for a fixed config and batch plan.
            torch.manual_seed(params.seed * 1_000_003 + batch_index)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [StopOnStrings(input_ids.shape[1], params.stop, self.tokenizer)]
            )
        with contiguous_head_input(self.model):
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_tokens = output[:, input_ids.shape[1] :].tolist()
        results: list[list[Sample]] = []
        eos = set(self.eos_ids)
        for p in range(len(prompts)):
            samples = []
            for s in range(params.n):
                row = new_tokens[p * params.n + s]
                cut = next((i for i, t in enumerate(row) if t in eos), None)
                samples.append(
                    Sample(token_ids=row[:cut] if cut is not None else row, hit_eos=cut is not None)
                )
            results.append(samples)
        return results

    def decode_loop_fits(self, tokens: int) -> bool:
        """Whether :class:`DecodeLoop` can run sequences of ``tokens`` tokens on this model. transformers
        marks the models whose attention works with a static cache (``_can_compile_fullgraph``); a
        sliding-window model qualifies only while sequences fit its window (the loop hands every layer
        the same full mask)."""
        causal_lm = _unwrap(self.model)
        if not getattr(causal_lm, "_can_compile_fullgraph", False):
            return False
        window = getattr(causal_lm.config.get_text_config(), "sliding_window", None)
        return not window or tokens <= window

    def decode_order(self, prompts: list[list[int]], params: SamplingParams) -> list[int]:
        """The order :meth:`decode` runs ``prompts`` fastest in (:func:`admission_order`)."""
        return admission_order(prompts, reuses_prefixes(self._prefix_reuse, params))

    def decode(
        self, prompts: list[list[int]], params: SamplingParams, slots: int, keys: list[int] | None = None
    ) -> Iterator[tuple[int, list[Sample], float]]:
        """Continuous batching through Tether's decode loop: ``(prompt index, samples, latency)`` as
        prompts finish, ``slots`` sequences in flight; ``keys`` seed each prompt's samples."""
        if self._loop is None:
            self._loop = DecodeLoop(
                self.model,
                self.tokenizer,
                self.eos_ids,
                self.pad_id,
                self.device,
                self._decode_step,
                kv_cache_bytes=self._kv_cache_bytes,
                prefix_reuse=self._prefix_reuse,
                packed_head=self._packed_head,
                prefix_cache_bytes=self._prefix_cache_bytes,
            )
        return self._loop.run(prompts, params, slots, keys=keys)

    # ------------------------------------------------------------------ scoring

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self._head(hidden).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def _attention_masks(self, ancestors: torch.Tensor, positions: torch.Tensor):
        """The packed rows' 4-D additive mask (rows, 1, width, width): 0 where a node may attend,
        the dtype's minimum elsewhere (SDPA takes it as it is; a boolean mask it would convert in
        every layer). Per layer type for models that mix full and sliding-window layers (a sliding
        layer also drops ancestors ``window`` or more positions back)."""
        config = self._decoder.config
        implementation = getattr(config, "_attn_implementation", "sdpa") or "sdpa"
        if implementation not in ("sdpa", "eager"):
            raise TetherError(
                f"packed scoring needs 'sdpa' or 'eager' attention; this model uses '{implementation}'",
                hint="load the model with attn_implementation='sdpa'",
            )

        def form(allowed: torch.Tensor) -> torch.Tensor:
            allowed = allowed[:, None, :, :]
            dtype = self._head.weight.dtype
            zero = torch.zeros((), dtype=dtype, device=allowed.device)
            return torch.where(allowed, zero, torch.finfo(dtype).min)

        layer_types = getattr(config, "layer_types", None)
        if not layer_types:
            return form(ancestors)
        masks = {}
        for kind in set(layer_types):
            if kind == "full_attention":
                masks[kind] = form(ancestors)
            elif kind == "sliding_attention":
                window = getattr(config, "sliding_window", None)
                if window is None or int(positions.max()) < window:
                    masks[kind] = form(ancestors)
                else:
                    near = positions[:, :, None] - positions[:, None, :] < window
                    masks[kind] = form(ancestors & near)
            else:
                raise TetherError(
                    f"packed scoring does not support '{kind}' attention layers",
                    hint="score this model with a backend that supports it",
                )
        return masks

    @torch.inference_mode()
    def score(self, requests: list[EncodedScore]) -> list[TokenScores]:
        """Pack the requests into prefix-tree rows (``tether.engine.packing``): each context runs once
        for all its continuations, shared prefixes once per row, in one forward with a 4-D mask and
        no KV-cache copies. The LM head runs only on the nodes that predict a continuation token,
        each once, in chunks, and the full-vocabulary log-softmax is never materialised: a token's
        log-prob is its logit minus its predictor's logsumexp."""
        tokens = self._token_logprobs(requests)
        device = self.device
        n = tokens.num_continuations
        sums = (
            torch.zeros(n, dtype=torch.float64, device=device)
            .index_add_(0, tokens.owner, tokens.logprobs)
            .tolist()
        )
        miss = (tokens.greedy_ids != tokens.targets).long()
        misses = torch.zeros(n, dtype=torch.long, device=device).index_add_(0, tokens.owner, miss).tolist()
        results, j = [], 0
        for r in requests:
            k = len(r.continuation_ids)
            results.append(
                TokenScores(logprobs=sums[j : j + k], is_greedy=[m == 0 for m in misses[j : j + k]])
            )
            j += k
        return results

    @torch.inference_mode()
    def echo(self, sequences: list[list[int]]) -> list[EchoScores]:
        """Per-token log-probs of whole sequences (an OpenAI ``echo`` with ``logprobs``), through the
        same packed forward as :meth:`score`: each sequence is a request whose context is its first
        token, plus one placeholder token so that the position after the last real token predicts
        too (its greedy token is the sequence's greedy continuation)."""
        requests = [
            EncodedScore(context_ids=s[:1], continuation_ids=[[*s[1:], self.pad_id]]) for s in sequences
        ]
        tokens = self._token_logprobs(requests)
        logprobs = tokens.logprobs.tolist()
        greedy_ids = tokens.greedy_ids.tolist()
        greedy_lp = tokens.greedy_logprobs.tolist()
        out, j = [], 0
        for s in sequences:
            k = len(s)  # tokens 1..len-1 and the placeholder
            out.append(
                EchoScores(
                    logprobs=logprobs[j : j + k - 1],
                    greedy_ids=greedy_ids[j : j + k],
                    greedy_logprobs=greedy_lp[j : j + k],
                )
            )
            j += k
        return out

    def _token_logprobs(self, requests: list[EncodedScore]) -> _TokenLogprobs:
        """Every continuation token's log-prob, its predictor's greedy token and that token's
        log-prob, in the packed batch's token order (grouped by continuation, in request order)."""
        batch = pack(requests, self.max_row_tokens, self.pad_id)
        device = self.device
        ids = torch.from_numpy(batch.input_ids).to(device)
        positions = torch.from_numpy(batch.position_ids).to(device)
        ancestors = torch.from_numpy(batch.ancestors).to(device)
        masks = self._attention_masks(ancestors, positions)
        predictors = torch.from_numpy(batch.predictors).to(device)
        if self._llama_layers:
            mask = masks["full_attention"] if isinstance(masks, dict) else masks
            real = torch.from_numpy(batch.real_cells()).to(device)
            hidden = _llama_forward(self._decoder, ids, positions, mask, real)
            predictors = torch.searchsorted(real, predictors)  # flat cell -> its place among the real ones
        else:
            out = self._decoder(input_ids=ids, attention_mask=masks, position_ids=positions, use_cache=False)
            hidden = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])
        hidden = hidden[predictors]

        token_predictor = torch.from_numpy(batch.token_predictor).to(device)
        token_target = torch.from_numpy(batch.token_target).to(device)
        n_pred = hidden.shape[0]
        lse = torch.empty(n_pred, dtype=torch.float32, device=device)
        greedy = torch.empty(n_pred, dtype=torch.long, device=device)
        greedy_logit = torch.empty(n_pred, dtype=torch.float32, device=device)
        target_logit = torch.empty(token_target.shape[0], dtype=torch.float32, device=device)
        # Tokens grouped by predictor, so each head chunk finds its tokens as one slice.
        by_pred = torch.argsort(token_predictor, stable=True)
        sorted_pred = token_predictor[by_pred]
        step = self.head_chunk
        for a in range(0, n_pred, step):
            b = min(a + step, n_pred)
            logits = self._logits(hidden[a:b])
            lse[a:b] = torch.logsumexp(logits, dim=-1)
            greedy_logit[a:b], greedy[a:b] = logits.max(dim=-1)
            lo, hi = torch.searchsorted(sorted_pred, torch.tensor([a, b], device=device)).tolist()
            tokens = by_pred[lo:hi]
            target_logit[tokens] = logits[token_predictor[tokens] - a, token_target[tokens]]
        return _TokenLogprobs(
            logprobs=(target_logit - lse[token_predictor]).double(),
            targets=token_target,
            greedy_ids=greedy[token_predictor],
            greedy_logprobs=(greedy_logit - lse)[token_predictor].double(),
            owner=torch.from_numpy(batch.token_owner).to(device),
            num_continuations=batch.num_continuations,
        )


@dataclass(frozen=True)
class _TokenLogprobs:
    logprobs: torch.Tensor  # (tokens,) float64: each continuation token's log-prob
    targets: torch.Tensor  # (tokens,) the tokens themselves
    greedy_ids: torch.Tensor  # (tokens,) the argmax token where each was predicted
    greedy_logprobs: torch.Tensor  # (tokens,) float64: that argmax token's log-prob
    owner: torch.Tensor  # (tokens,) the continuation (over all requests, in order) each belongs to
    num_continuations: int
