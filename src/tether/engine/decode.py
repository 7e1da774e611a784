"""Tether's decode loop: a static KV cache, continuous batching and token selection on the device.

transformers' ``generate`` runs a batch until its longest sequence ends, grows its KV cache by
concatenation every step and rebuilds the attention mask every step. :class:`DecodeLoop` instead:

* preallocates one K/V buffer per layer for ``slots`` sequences of ``capacity`` tokens
  (:class:`SlotCache`). Every slot writes at its own column, so sequences of different lengths share
  a batch without padding;
* refills a slot with the next waiting sequence as soon as its own ends (continuous batching). The
  prompts admitted together are prefilled together, left-padded as transformers' batched
  ``generate`` does (short prompts only, :data:`PREFILL_BATCH_MAX_PROMPT`; a prompt prefilled alone
  runs exactly as a one-prompt ``generate`` would), and each prompt's K/V is copied into the slots
  of its ``n`` samples. One at a time, the prefills of 64 short chat prompts were 39% of their
  generation time on a 2-core CPU;
* with ``prefix_reuse`` on, prefills a long prompt on top of the keys and values of the tokens it
  shares with the long prompt prefilled before it, running only the rest (with
  ``prefix_cache_bytes``, with any long prompt an earlier call prefilled: :class:`PrefixStore`, so
  a conversation coming back turn after turn prefills only its new turn). Long prompts are then
  admitted in token order (:func:`admission_order`), so that prompts sharing a prefix (a few-shot
  block) are neighbours: CAI's critique and revision requests share about half their tokens this
  way. The rest runs with fewer rows, so its floats can differ in the last bits from a full
  prefill ('auto' reuses prefixes for sampled decoding only, and greedy decoding stays identical
  to ``generate``). On the CAI loop stage no sample changed (README "Engine");
* keeps a ``(slots, 1, 1, capacity)`` boolean attention mask that it updates in place, one column a
  step, and hands to the model ready-made, so transformers builds none;
* on a CPU in float32, computes a step's logits with the LM head's weight packed for oneDNN
  (:func:`packed_lm_head`): at a step's few rows the head is the largest matmul, and plain
  ``F.linear`` runs it at about a third of the matmul peak;
* selects tokens on the device (``argmax``, or a draw from the nucleus with one seeded generator
  per sequence, so a sequence's samples do not depend on which slot or step it ran in), and checks stop
  strings on each sequence's new text only (:class:`StopMatcher`).

A decode step is one forward of the model with ``slots`` one-token rows. Eagerly (the default off
CUDA) a step attends over the widest live sequence only. ``step="compiled"`` (``torch.compile``) and
``step="cuda_graph"`` (one captured CUDA graph replayed every step) need shapes that never change:
every step then attends over the whole capacity, rounded up to a multiple of
:data:`STATIC_CAPACITY_STEP` so that calls with similar lengths reuse one compiled step, graph and
cache.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers.cache_utils import Cache, DynamicCache

from tether.engine.backend import Sample
from tether.engine.types import SamplingParams
from tether.models.head import contiguous_head_input
from tether.models.padding import left_pad, positions_from_mask

StepMode = Literal["eager", "compiled", "cuda_graph"]


def resolve_step(mode: StepMode | Literal["auto"], device: torch.device | str) -> StepMode:
    """``engine.decode_step``: 'auto' is one captured CUDA graph a step on a CUDA device, where an eager
    step of a small model is bound by kernel launches (on an H200, PPO's rollouts took 2.0 s with the
    graph against 6.3 s eagerly and 4.8 s with transformers' generate: README "RLHF for
    summarization"), and eager elsewhere."""
    if mode != "auto":
        return mode
    return "cuda_graph" if torch.device(device).type == "cuda" else "eager"


STATIC_CAPACITY_STEP = 128
# Padded tokens per prefill forward: enough to fill the matmuls on a CPU, small enough that the
# batch's transformers cache (46 KB a token on the default model) stays far below the slot cache.
PREFILL_BATCH_TOKENS = 4096
# Only short prompts are prefilled together: their matmuls are too thin to run well alone, while a
# long prompt's already run well and a padded batch of them costs a masked attention with copied
# key/value heads (harmful_refusal's long prompts prefilled 1.5x slower batched). A batch pads by
# at most a quarter of its width.
PREFILL_BATCH_MAX_PROMPT = 128
PrefixReuse = Literal["auto", "on", "off"]


class StopMatcher:
    """Says when a sequence's generated text first contains one of ``stops``, decoding only new tokens.

    Byte-level tokenizers split characters across tokens, so text is taken as the difference between
    decoding the last tokens with and without the newest ones (the incremental detokenisation of
    transformers' ``TextStreamer``), and held back while it ends in an incomplete character. Only the
    new text plus the ``len(longest stop) - 1`` characters before it are searched each step.
    """

    def __init__(self, stops: Sequence[str], tokenizer):
        self.stops = [s for s in stops if s]
        self.tokenizer = tokenizer
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.tokens: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.tail = ""
        self.hit = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> bool:
        """Add one generated token; True once a stop string has appeared (and from then on)."""
        self.tokens.append(token)
        if self.hit or not self.stops:
            return self.hit
        before = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        after = self._decode(self.tokens[self.prefix_offset :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return False  # no visible text yet (a special token, or half a character)
        new = after[len(before) :]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
        window = self.tail + new
        self.hit = any(s in window for s in self.stops)
        self.tail = window[-self.keep :] if self.keep else ""
        return self.hit


class SlotCache(Cache):
    """Preallocated keys and values for ``slots`` sequences of up to ``capacity`` tokens, every layer.

    Shape per layer ``(slots, kv_heads, capacity, head_dim)``, allocated on the first write. A decode
    step writes each slot's new key/value at its own column ``write_index[slot]`` and returns the
    first ``width`` columns to attend over; the caller's mask says which of them each slot may see.
    """

    is_compileable = True

    def __init__(self, num_layers: int, slots: int, capacity: int, device: torch.device):
        super().__init__(layers=[])
        self.slots, self.capacity = slots, capacity
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.write_index = torch.zeros(slots, dtype=torch.long, device=device)
        self.slot_rows = torch.arange(slots, device=device)
        self.width = capacity

    def _buffers(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is None:
            shape = (self.slots, keys.shape[1], self.capacity)
            self.keys[layer] = keys.new_zeros(*shape, keys.shape[3])
            self.values[layer] = values.new_zeros(*shape, values.shape[3])
        return self.keys[layer], self.values[layer]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self._buffers(layer_idx, key_states, value_states)
        # Indexed assignment, not scatter_: on a CPU, bfloat16 scatter_ copies the whole buffer every
        # call (53 ms against 0.06 ms at 128 slots x 1,200 tokens), which made bf16 decoding of long
        # prompts slower than float32; the two write the same values.
        keys[self.slot_rows, :, self.write_index] = key_states[:, :, 0]
        values[self.slot_rows, :, self.write_index] = value_states[:, :, 0]
        return keys[:, :, : self.width], values[:, :, : self.width]

    def load(self, slots: torch.Tensor, prefix: Cache, length: int, row: int = 0, start: int = 0) -> None:
        """Copy a prefilled prompt's keys and values into ``slots``: row ``row`` of the transformers
        cache ``prefix``, columns ``start`` to ``start + length`` (after its left padding)."""
        for layer, cached in enumerate(prefix.layers):
            keys, values = self._buffers(layer, cached.keys, cached.values)
            keys[slots, :, :length] = cached.keys[row, :, start : start + length]
            values[slots, :, :length] = cached.values[row, :, start : start + length]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return self.capacity


@dataclass
class _Sequence:
    """One sample of one prompt, while it decodes."""

    prompt: int
    sample: int
    generator: torch.Generator | None
    stop: StopMatcher | None
    tokens: list[int] = field(default_factory=list)
    hit_eos: bool = False


def prefill_batches(
    items: Sequence,
    lengths: Sequence[int],
    budget: int = PREFILL_BATCH_TOKENS,
    longest: int = PREFILL_BATCH_MAX_PROMPT,
) -> list[list]:
    """``items`` in order, cut into prefill batches: prompts of at most ``longest`` tokens share a
    batch while its left-padded size (rows x widest) stays within ``budget`` tokens and no row is
    padded by more than a quarter of the width; any other prompt goes alone."""
    batches: list[list] = []
    high = low = 0  # the longest and shortest prompt of the last batch
    for item, length in zip(items, lengths, strict=True):
        if batches and high <= longest and length <= longest:
            wide, narrow = max(high, length), min(low, length)
            if wide * (len(batches[-1]) + 1) <= budget and 4 * (wide - narrow) <= wide:
                batches[-1].append(item)
                high, low = wide, narrow
                continue
        batches.append([item])
        high = low = length
    return batches


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


def admission_order(prompts: Sequence[Sequence[int]], reuse: bool) -> list[int]:
    """The order in which to admit ``prompts``: longest first, so that prompts of similar length are
    prefilled together. With ``reuse``, the prompts too long to share a prefill go first, in token
    order, so that each follows the one it shares its longest prefix with."""

    def key(index: int) -> tuple:
        prompt = prompts[index]
        if reuse and len(prompt) > PREFILL_BATCH_MAX_PROMPT:
            return (0, list(prompt))
        return (1, -len(prompt))

    return sorted(range(len(prompts)), key=key)


def reuses_prefixes(mode: PrefixReuse, params: SamplingParams) -> bool:
    """Whether a call with ``params`` prefills prompts on their predecessor's shared prefix: 'auto'
    does for sampled decoding, whose samples are the loop's own, and not for greedy decoding, which
    stays identical to transformers' generate."""
    return mode == "on" or (mode == "auto" and params.temperature > 0)


def model_state(model: torch.nn.Module, *, versions: bool = True) -> tuple:
    """What kept keys and values depend on besides their tokens: every parameter and buffer (identity
    and in-place version: an optimizer step or weight orthogonalisation bumps it), every forward hook
    and pre-hook, every forward replaced on an instance, PEFT's adapter switches and scales, and
    whether the model is in training mode (dropout).

    Without ``versions``: what a captured CUDA graph depends on. The graph reads every tensor where it
    lies, so an in-place update (PPO's optimizer step) reaches it; a new tensor, a hook or an adapter
    switch or scale (a Python value the capture baked in) does not."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    state: list = [model.training] + [(id(t), t._version) if versions else id(t) for t in tensors]
    for module in model.modules():
        if module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__:
            state.append(
                (
                    id(module),
                    tuple(module._forward_hooks),
                    tuple(module._forward_pre_hooks),
                    id(module.__dict__.get("forward")),
                )
            )
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict):
            state.append(
                (
                    id(module),
                    tuple(sorted(scaling.items())),
                    getattr(module, "_disable_adapters", None),
                    str(getattr(module, "active_adapter", None)),
                )
            )
    return tuple(state)


class PrefixStore:
    """The keys and values of prompts prefilled alone, for later prompts that begin the same way.

    Without a budget (``max_bytes`` 0) it holds the last such prompt only and the loop empties it after
    every call: what ``prefix_reuse`` did before the store existed. With a budget
    (``engine.prefix_cache_mb``) it keeps prompts across calls, and a prompt replaces every stored
    prompt it extends, since the longer one serves every prompt the shorter one could: a multi-turn
    conversation keeps one entry that grows turn by turn, so each turn prefills only what the last one
    did not have. Past the budget, prompts that another holds at least half of go first (a
    red-team attacker's request for turn 3 shares all but its last lines with turn 4's), least
    recently used first, and then the least recently used of the rest. Plain LRU kept the superseded
    turns and dropped live conversations instead: with 50 conversations a round cycling through a
    store that holds fewer, every lookup missed. Keys and values are valid only
    for the model state that made them (:func:`model_state`); :meth:`keep_for` empties the store when
    that changes."""

    def __init__(self, max_bytes: int, bytes_per_token: int):
        self.max_bytes = max_bytes
        self.bytes_per_token = bytes_per_token
        self.entries: OrderedDict[tuple[int, ...], Cache] = OrderedDict()
        # entry -> the entries that hold at least half of it: dropped first past the budget
        self.covered_by: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
        self.state: tuple | None = None

    @property
    def persistent(self) -> bool:
        return self.max_bytes > 0

    @property
    def tokens(self) -> int:
        return sum(len(key) for key in self.entries)

    def clear(self) -> None:
        self._clear_entries()
        self.state = None

    def keep_for(self, state: tuple) -> None:
        """Keep the entries if they were made under ``state``; otherwise start empty."""
        if state != self.state:
            self._clear_entries()
            self.state = state

    def longest(self, prompt: Sequence[int]) -> tuple[int, Cache | None]:
        """The most tokens ``prompt`` shares with a stored prompt, and that prompt's cache."""
        best, found = 0, None
        for key in self.entries:
            shared = shared_prefix(prompt, key)
            if shared > best:
                best, found = shared, key
        if found is None:
            return 0, None
        self.entries.move_to_end(found)
        return best, self.entries[found]

    def add(self, prompt: Sequence[int], cache: Cache) -> None:
        key = tuple(prompt)
        if not self.persistent:
            self._clear_entries()
        holders = set()
        for stored in list(self.entries):
            shared = shared_prefix(key, stored)
            if shared == len(stored):
                self._drop(stored)
            elif shared == len(key):
                holders.add(stored)
            elif 2 * shared >= len(stored):
                self.covered_by.setdefault(stored, set()).add(key)
        self.entries[key] = cache
        if holders:
            self.covered_by[key] = holders
        while len(self.entries) > 1 and self.tokens * self.bytes_per_token > self.max_bytes:
            self._drop(next((k for k in self.entries if k in self.covered_by), next(iter(self.entries))))

    def _clear_entries(self) -> None:
        self.entries.clear()
        self.covered_by.clear()

    def _drop(self, key: tuple[int, ...]) -> None:
        del self.entries[key]
        self.covered_by.pop(key, None)
        for stored, holders in list(self.covered_by.items()):
            holders.discard(key)
            if not holders:  # nothing holds it any more: an ordinary entry again
                del self.covered_by[stored]


def packed_lm_head(model) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]] | None:
    """``(head, forward)``: the model's LM head and a forward for it that runs one oneDNN matmul on a
    copy of its weight packed for that, or None where that does not apply (a head that is not a
    plain float32 ``nn.Linear`` on the CPU, one with a forward of its own already, or a torch
    without oneDNN's linear).

    At a decode step's few rows the head's ``[vocab, d]`` matmul is the step's largest, and plain
    ``F.linear`` runs it at about a third of the matmul peak on an AVX2 CPU: 26 ms of a 150 ms step
    at 16 rows for SmolLM2-135M's 49k x 576 head, against 11 ms packed. Packing takes 57 ms there;
    :class:`DecodeLoop` keeps the copy until the weight changes."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear or "forward" in head.__dict__:
        return None
    weight = head.weight
    cpu_float32 = weight.device.type == "cpu" and weight.dtype == torch.float32
    if not cpu_float32 or not torch.backends.mkldnn.is_available():
        return None
    ops = torch.ops.mkldnn
    try:
        packed = ops._reorder_linear_weight(weight.detach(), 16)
    except (AttributeError, RuntimeError):  # a torch built without these private oneDNN ops
        return None
    bias = head.bias.detach() if head.bias is not None else None

    def forward(x: torch.Tensor) -> torch.Tensor:
        rows = ops._linear_pointwise(x.reshape(-1, x.shape[-1]), packed, bias, "none", [], "")
        return rows.view(*x.shape[:-1], -1)

    return head, forward


@contextmanager
def _head_forward(packed: tuple[torch.nn.Module, Callable] | None) -> Iterator[None]:
    """The packed head's forward in force for one model call (nothing when ``packed`` is None)."""
    if packed is None:
        yield
        return
    head, forward = packed
    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def sequence_seed(seed: int, prompt: int, sample: int) -> int:
    """The sampling seed of one sequence: depends on the call's seed and its place in the call only."""
    return (seed * 1_000_003 + prompt) * 1_009 + sample


NUCLEUS_CANDIDATES = 256  # top-k candidates that hold the nucleus of almost every real decode step


def nucleus(scores: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Nucleus (top-p) sampling's candidates for each row of ``scores`` (``(rows, vocab)``, already
    divided by the temperature): ``(tokens, probs)``, both ``(rows, k)``, tokens by falling
    probability, ``probs`` their softmax probabilities over the whole vocabulary with every token
    past the nucleus set to 0 (not renormalised). The nucleus is the smallest set of most probable
    tokens whose probability reaches ``top_p`` (at least one token); ``top_p >= 1`` keeps all.

    The candidates are the top :data:`NUCLEUS_CANDIDATES` tokens; a row whose nucleus does not end
    among them is redone over the whole vocabulary, so the result is exact either way."""
    vocab = scores.shape[-1]
    if top_p >= 1.0:
        tokens = torch.arange(vocab, device=scores.device).expand_as(scores)
        return tokens, scores.softmax(-1)
    normaliser = scores.logsumexp(-1, keepdim=True)

    k = min(NUCLEUS_CANDIDATES, vocab)
    top, tokens = scores.topk(k, dim=-1)
    probs = (top - normaliser).exp()
    reached = probs.sum(-1) >= top_p
    if k < vocab and not bool(reached.all()):
        wide = scores[~reached]
        wide_top, wide_tokens = wide.sort(dim=-1, descending=True)
        wide_probs = (wide_top - normaliser[~reached]).exp()
        full_tokens = torch.zeros_like(scores, dtype=tokens.dtype)
        full_probs = torch.zeros_like(scores)
        full_tokens[:, :k], full_probs[:, :k] = tokens, probs
        full_tokens[~reached], full_probs[~reached] = wide_tokens, wide_probs
        tokens, probs = full_tokens, full_probs
    before = probs.cumsum(-1) - probs
    return tokens, probs.masked_fill(before >= top_p, 0.0)


class DecodeLoop:
    """Greedy or sampled decoding of many prompts through a fixed number of slots (module docstring).

    ``model`` is a transformers causal LM (or a PEFT model around one) whose attention layers write
    through ``Cache.update`` and accept a ready 4-D mask, as every model with static-cache support does.
    """

    def __init__(
        self,
        model,
        tokenizer,
        eos_ids: Sequence[int],
        pad_id: int,
        device: torch.device,
        step: StepMode = "eager",
        *,
        kv_cache_bytes: int | None = None,
        prefix_reuse: PrefixReuse = "auto",
        packed_head: bool = True,
        prefix_cache_bytes: int = 0,
    ):
        if step == "cuda_graph" and torch.device(device).type != "cuda":
            raise ValueError("step='cuda_graph' needs a CUDA device")
        self.model = model
        self.tokenizer = tokenizer
        self.eos = set(eos_ids)
        self.pad_id = pad_id
        self.device = device
        self.step = step
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.num_layers = int(config.num_hidden_layers)
        self.kv_cache_bytes = kv_cache_bytes
        self.prefix_reuse = prefix_reuse
        self.packed_head = packed_head
        self._head: tuple[torch.nn.Module, Callable] | None = None  # packed_lm_head's, during a call
        # The packed head, the weight it was packed from and that weight's version, kept across calls.
        self._packed: tuple[tuple[torch.nn.Module, Callable], torch.Tensor, int] | None = None
        self.reused_tokens = 0  # prompt tokens whose keys and values came from an earlier prefill
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        element = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 4
        self.kv_bytes_per_token = self.num_layers * 2 * kv_heads * head_dim * element
        # Prompts prefilled alone, with their transformers caches: later prompts' prefixes.
        self.prefixes = PrefixStore(prefix_cache_bytes, self.kv_bytes_per_token)
        self._compiled: Callable | None = None
        # Static modes keep the cache, mask and graph of the last shape, for the next call to reuse.
        self._static: tuple[tuple, SlotCache, torch.Tensor, Callable] | None = None

    def fitting_slots(self, slots: int, capacity: int) -> int:
        """``slots``, reduced so that the K/V cache of that many ``capacity``-token sequences fits
        ``kv_cache_bytes`` (always at least one slot)."""
        if self.kv_cache_bytes is None:
            return slots
        return max(1, min(slots, self.kv_cache_bytes // (capacity * self.kv_bytes_per_token)))

    # ------------------------------------------------------------------ token selection

    @torch.no_grad()
    def _select(
        self, logits: torch.Tensor, rows: list[_Sequence | None], params: SamplingParams
    ) -> list[int]:
        """The next token of every row of ``logits`` (float32, ``(rows, vocab)``); empty rows get pad.

        Sampling draws one uniform number from the sequence's own generator and inverts the
        cumulative distribution of its nucleus (:func:`nucleus`), which is what ``multinomial``
        does, without a full-vocabulary sort or one ``multinomial`` call over the vocabulary per
        row: at 128 rows of a 49k vocabulary those took 0.7 s a step on a 2-core CPU, more than the
        model's forward."""
        if params.temperature == 0:
            return logits.argmax(-1).tolist()
        out = [self.pad_id] * len(rows)
        live = [row for row, seq in enumerate(rows) if seq is not None]
        if not live:
            return out
        tokens, probs = nucleus(logits[live] / params.temperature, params.top_p)
        cdf = probs.cumsum(-1)
        draws = torch.cat(
            [torch.rand(1, generator=rows[row].generator, device=logits.device) for row in live]
        )
        picks = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None], right=True)
        # A draw that rounds up to the total takes the last token with a probability.
        last = (probs > 0).cumsum(-1).argmax(-1, keepdim=True)
        chosen = tokens.gather(-1, torch.minimum(picks, last)).squeeze(-1).tolist()
        for row, token in zip(live, chosen, strict=True):
            out[row] = token
        return out

    # ------------------------------------------------------------------ the loop

    def run(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        slots: int,
        *,
        keys: Sequence[int] | None = None,
    ) -> Iterator[tuple[int, list[Sample], float]]:
        """Yield ``(prompt index, its params.n samples, seconds from its admission)`` as prompts finish.

        Prompts are admitted in the order given, ``slots`` sequences at a time; a finished sequence's
        slot takes the next waiting one at once. Sampling seeds each sequence from ``params.seed``,
        its prompt's key (``keys[index]``, default the index) and its sample index.
        """
        keys = list(keys) if keys is not None else list(range(len(prompts)))
        n = params.n
        capacity = max(len(p) for p in prompts) + params.max_new_tokens
        static = self.step != "eager"
        if static:
            capacity = -(-capacity // STATIC_CAPACITY_STEP) * STATIC_CAPACITY_STEP
        slots = self.fitting_slots(max(1, min(slots, len(prompts) * n)), capacity)
        cache, mask, forward = self._state(slots, capacity)
        reuse = reuses_prefixes(self.prefix_reuse, params)
        if not self.prefixes.persistent:
            self.prefixes.clear()
        elif reuse:  # a call that reuses nothing leaves the kept prompts to the next one that does
            self.prefixes.keep_for(model_state(self.model))
        # Decode steps only: a prompt prefilled alone keeps the plain head, as a one-prompt generate.
        self._head = self._packed_lm_head() if self.packed_head and not static else None
        rows: list[_Sequence | None] = [None] * slots
        lengths = [0] * slots  # tokens in each slot's cache
        last = [self.pad_id] * slots  # the token each slot feeds next
        waiting = deque((p, k) for p in range(len(prompts)) for k in range(n))
        done: dict[int, list[_Sequence]] = {}
        admitted: dict[int, float] = {}

        def finish(slot: int) -> Iterator[tuple[int, list[Sample], float]]:
            seq = rows[slot]
            rows[slot] = None
            lengths[slot], last[slot] = 0, self.pad_id
            mask[slot].zero_()
            mask[slot, :, :, 0] = True
            done.setdefault(seq.prompt, []).append(seq)
            if len(done[seq.prompt]) == n:
                samples = sorted(done.pop(seq.prompt), key=lambda s: s.sample)
                latency = time.perf_counter() - admitted.pop(seq.prompt)
                yield seq.prompt, [Sample(token_ids=s.tokens, hit_eos=s.hit_eos) for s in samples], latency

        def accept(slot: int, token: int) -> bool:
            """Append ``token`` to the slot's sequence; True when that ends it."""
            seq = rows[slot]
            if token in self.eos:
                seq.hit_eos = True
                return True
            seq.tokens.append(token)
            last[slot] = token
            stopped = seq.stop.push(token) if seq.stop is not None else False
            return stopped or len(seq.tokens) >= params.max_new_tokens

        def take(free: list[int]) -> tuple[int, list[int]]:
            """Seat the next waiting prompt's waiting samples in free slots: (prompt, their slots)."""
            prompt = waiting[0][0]
            group = []
            while free and waiting and waiting[0][0] == prompt:
                _, sample = waiting.popleft()
                generator = None
                if params.temperature > 0:
                    generator = torch.Generator(self.device).manual_seed(
                        sequence_seed(params.seed, keys[prompt], sample)
                    )
                stop = StopMatcher(params.stop, self.tokenizer) if params.stop else None
                slot = free.pop(0)
                rows[slot] = _Sequence(prompt, sample, generator, stop)
                group.append(slot)
            admitted.setdefault(prompt, time.perf_counter())
            return prompt, group

        def admit() -> Iterator[tuple[int, list[Sample], float]]:
            free = [s for s in range(slots) if rows[s] is None]
            while free and waiting:
                seated = []
                while free and waiting:
                    seated.append(take(free))
                for batch in prefill_batches(seated, [len(prompts[p]) for p, _ in seated]):
                    logits = self._prefill(
                        cache,
                        [(torch.tensor(group, device=self.device), prompts[p]) for p, group in batch],
                        mask,
                        reuse=reuse,
                    )
                    for (prompt, group), row_logits in zip(batch, logits, strict=True):
                        tokens = self._select(
                            row_logits.expand(len(group), -1), [rows[s] for s in group], params
                        )
                        for slot, token in zip(group, tokens, strict=True):
                            lengths[slot] = len(prompts[prompt])
                            if accept(slot, token):
                                yield from finish(slot)
                                free.append(slot)
                free.sort()

        try:
            yield from admit()
            while any(rows):
                live = [s for s in range(slots) if rows[s] is not None]
                cache.write_index.copy_(torch.tensor(lengths, device=self.device))
                # Each slot's new token sees itself (an empty slot's index is 0, already visible).
                mask.scatter_(3, cache.write_index.view(-1, 1, 1, 1), True)
                cache.width = capacity if static else max(lengths[s] for s in live) + 1
                ids = torch.tensor(last, device=self.device).view(slots, 1)
                logits = forward(ids, cache, mask[:, :, :, : cache.width])
                tokens = self._select(logits, rows, params)
                for slot in live:
                    lengths[slot] += 1
                    if accept(slot, tokens[slot]):
                        yield from finish(slot)
                if waiting and not all(rows):
                    yield from admit()
        finally:
            if not self.prefixes.persistent:
                self.prefixes.clear()  # tens of MB of keys and values
            self._head = None

    def _packed_lm_head(self) -> tuple[torch.nn.Module, Callable] | None:
        """:func:`packed_lm_head` of the model, packed again only when the head's weight has changed
        since the last call: another tensor, or the same one written in place (an optimizer step or
        a ``load_state_dict`` bumps its version), so a policy trained between calls is read as it is."""
        if self._packed is not None:
            packed, weight, version = self._packed
            head = packed[0]
            unchanged = head.weight is weight and weight._version == version
            if unchanged and self.model.get_output_embeddings() is head and "forward" not in head.__dict__:
                return packed
        packed = packed_lm_head(self.model)
        self._packed = None if packed is None else (packed, packed[0].weight, packed[0].weight._version)
        return packed

    def _state(self, slots: int, capacity: int) -> tuple[SlotCache, torch.Tensor, Callable]:
        """A cache and mask for ``slots`` x ``capacity`` (an empty slot sees column 0 only, so its
        discarded row is never all -inf), and the step function that runs on them."""
        if self.step == "eager":
            cache = SlotCache(self.num_layers, slots, capacity, self.device)
            mask = torch.zeros(slots, 1, 1, capacity, dtype=torch.bool, device=self.device)
            mask[:, :, :, 0] = True
            return cache, mask, self._forward
        # A graph replays the model as it was captured: another adapter scale or hook needs a new one.
        key = (
            slots,
            capacity,
            model_state(self.model, versions=False) if self.step == "cuda_graph" else None,
        )
        if self._static is not None and self._static[0] == key:
            _, cache, mask, forward = self._static
            cache.write_index.zero_()
        else:
            self._static = None  # free the old buffers first
            cache = SlotCache(self.num_layers, slots, capacity, self.device)
            mask = torch.zeros(slots, 1, 1, capacity, dtype=torch.bool, device=self.device)
            if self.step == "compiled":
                if self._compiled is None:
                    self._compiled = torch.compile(self._forward, dynamic=False)
                forward = self._compiled
            else:
                forward = _GraphedStep(self._forward)
            self._static = (key, cache, mask, forward)
        mask.zero_()
        mask[:, :, :, 0] = True
        return cache, mask, forward

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor, cache: SlotCache, mask: torch.Tensor) -> torch.Tensor:
        """One decode step: the next-token logits ``(slots, vocab)`` in float32."""
        with _head_forward(self._head):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=cache.write_index.view(-1, 1),
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1].float()

    @torch.no_grad()
    def _prefill(
        self,
        cache: SlotCache,
        admissions: Sequence[tuple[torch.Tensor, Sequence[int]]],
        mask: torch.Tensor,
        *,
        reuse: bool = False,
    ) -> torch.Tensor:
        """Prefill the prompts of ``admissions`` (each with the slots of its samples) in one forward,
        copy each prompt's K/V into its slots, and return the logits ``(prompts, vocab)`` of their
        first new tokens. One prompt runs alone, as a one-prompt ``generate`` does (with ``reuse``,
        only past the prefix it shares with the previous prompt that ran alone); several are
        left-padded and masked as transformers' batched ``generate`` does, so every prompt's last
        position, the one whose logits are kept, is the batch's last column."""
        if len(admissions) == 1:
            prompt = list(admissions[0][1])
            out = self._prefill_alone(prompt, reuse)
            width = len(prompt)
            if reuse:
                self.prefixes.add(prompt, out.cache)
        else:
            ids, attention = left_pad([list(prompt) for _, prompt in admissions], self.pad_id, self.device)
            with contiguous_head_input(self.model):
                out = self.model(
                    input_ids=ids,
                    attention_mask=attention,
                    position_ids=positions_from_mask(attention),
                    use_cache=True,
                    logits_to_keep=1,
                )
            width = ids.shape[1]
        for row, (slots, prompt) in enumerate(admissions):
            cache.load(slots, out.cache, len(prompt), row=row, start=width - len(prompt))
            mask[slots] = False
            mask[slots, :, :, : len(prompt)] = True
        return out.logits[:, -1].float()

    def _prefill_alone(self, prompt: list[int], reuse: bool):
        """One prompt's prefill forward; with ``reuse``, on a copy of the keys and values of the longest
        prefix it shares with a prompt prefilled alone before (:class:`PrefixStore`; its last token
        always runs: its logits are the first new token's)."""
        shared, before_cache = self.prefixes.longest(prompt) if reuse else (0, None)
        shared = min(shared, len(prompt) - 1)
        if shared <= 0:
            ids = torch.tensor([prompt], device=self.device)
            return self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        self.reused_tokens += shared
        prefix = DynamicCache(
            [(layer.keys[:, :, :shared], layer.values[:, :, :shared]) for layer in before_cache.layers]
        )
        return self.model(
            input_ids=torch.tensor([prompt[shared:]], device=self.device),
            position_ids=torch.arange(shared, len(prompt), device=self.device).view(1, -1),
            cache=prefix,
            use_cache=True,
            logits_to_keep=1,
        )


class _GraphedStep:
    """The decode step captured once in a CUDA graph and replayed: one launch a step instead of one
    per kernel. The graph reads the token ids from its own buffer and the cache, mask and write
    positions in place, so every step of every call with the same shapes replays the same graph. If
    capture fails (a model whose forward synchronises with the host, say), it warns and runs eagerly.

    The suite runs on a CPU, so it checks only when the loop captures again (a stand-in graph); the
    capture and replay ran on an H200 in ``benchmarks/ppo_gpu.py``: greedy text identical to one
    ``generate`` per prompt, 32 of 32."""

    def __init__(self, forward: Callable):
        self.forward = forward
        self.graph = None
        self.ids: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.eager = False

    def __call__(self, ids: torch.Tensor, cache: SlotCache, mask: torch.Tensor) -> torch.Tensor:
        if self.eager:
            return self.forward(ids, cache, mask)
        if self.graph is None:
            try:
                self._capture(ids, cache, mask)
            except Exception as error:  # noqa: BLE001 - any capture failure falls back to eager steps
                warnings.warn(f"CUDA graph capture failed ({error}); decoding eagerly", stacklevel=2)
                self.eager = True
                return self.forward(ids, cache, mask)
        self.ids.copy_(ids)
        self.graph.replay()
        return self.logits

    def _capture(self, ids: torch.Tensor, cache: SlotCache, mask: torch.Tensor) -> None:
        self.ids = ids.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up writes the same keys and values the real step will
                self.forward(self.ids, cache, mask)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self.forward(self.ids, cache, mask)
        self.graph = graph
