"""GCG (Zou et al. 2023, "Universal and Transferable Adversarial Attacks on Aligned Language
Models"): an adversarial suffix, appended to the goal inside the user turn of the target's chat
template, optimised so that the target's log-likelihood of a target string ("Sure, here is ...") is
as high as possible.

One step, as nanogcg implements it:

1. the gradient of the target string's cross-entropy with respect to a one-hot encoding of the
   suffix tokens (the one-hot rows times the embedding matrix are the suffix's embeddings);
2. the ``topk`` tokens with the most negative gradient at each suffix position (non-ASCII,
   unprintable and special tokens never allowed);
3. ``search_width`` candidates, each the current suffix with one random position swapped for one of
   that position's top-k tokens; candidates whose prompt, rendered and tokenized as the engine will
   send it, does not give back the same token ids are dropped (so the optimised ids are the ids the
   target reads);
4. every candidate's loss in batched forward passes; the best is kept if it beats the current
   suffix. Unlike nanogcg (which takes the batch's best even when it is worse), the current suffix's
   loss therefore never increases.

Every candidate shares the tokens before the suffix (the system prompt, the user turn's opening and
the goal: about half of a prompt), so their keys and values are computed once per goal and each
forward pass, the gradient's included, runs only the suffix, the turn's end and the target string
(``gcg.prefix_cache``, as nanogcg's ``use_prefix_cache``; the same losses to float rounding, tested).

Written here instead of depending on nanogcg: nanogcg pins ``transformers<=4.47.1`` and Tether runs
transformers 5.x. Not built: nanogcg's attack buffer, multi-position swaps, probe sampling and
early stopping on an exact match.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F

from tether.engine.types import Prompt
from tether.errors import ConfigError
from tether.models.kv import KeysValues, cache_of, returned_keys_values
from tether.redteam.config import GCGConfig

_MARK = "\u2063GCG\u2063"  # stands where the suffix goes, to split the rendered prompt around it

# Leading verbs of HarmBench behaviours dropped to build "Sure, here is <the rest>".
_VERBS = (
    "write",
    "give",
    "generate",
    "create",
    "provide",
    "describe",
    "explain",
    "list",
    "develop",
    "compose",
    "produce",
    "draft",
    "devise",
    "outline",
    "suggest",
    "convince",
)


def target_string(goal: str) -> str:
    """The completion GCG makes likely: "Sure, here is " and the goal without its leading verb
    ("Write a persuasive article about X" gives "Sure, here is a persuasive article about X"), or
    "Sure, here is how to <goal>" when the goal does not start with one of those verbs."""
    text = " ".join(goal.split()).rstrip(".!?:;")
    first, _, rest = text.partition(" ")
    if first.lower() in _VERBS and rest:
        return f"Sure, here is {rest}"
    return f"Sure, here is how to {text[:1].lower()}{text[1:]}"


def checkpoints(steps: int, budget: int, every: int | None = None) -> list[int]:
    """After which optimisation steps the current prompt is sent to the target: every ``every``
    steps and after the last step, or (``every`` None) ``min(budget, steps)`` points spread evenly
    with the last after the final step. Never more than ``budget`` of them."""
    if every is None:
        k = min(budget, steps)
        return sorted({math.ceil(i * steps / k) for i in range(1, k + 1)})
    points = list(range(every, steps + 1, every))
    if not points or points[-1] != steps:
        points.append(steps)
    return points[:budget]


class WhiteBox:
    """A local model's weights and tokenizer, and the engine's own rendering of a chat prompt, so
    the suffix is optimised on the exact tokens the engine sends."""

    def __init__(self, model: Any, tokenizer: Any, render: Callable[[Prompt], str], has_chat_template: bool):
        self.model, self.tokenizer, self.render = model, tokenizer, render
        self.add_special_tokens = not has_chat_template  # as Engine.encode_prompt tokenizes

    @classmethod
    def of(cls, engine: Any) -> WhiteBox:
        """The white box of an engine over local weights; a served engine has none (ConfigError)."""
        if not (isinstance(getattr(engine, "model", None), torch.nn.Module) and hasattr(engine, "tokenizer")):
            raise ConfigError(
                f"gcg needs the target's weights and gradients, and {engine.name!r} is not a local model",
                where="target",
                hint="attack a local model (default, an HF directory, a .gguf) or drop gcg from strategies",
            )
        return cls(engine.model, engine.tokenizer, engine.render, engine.has_chat_template)

    def encode(self, text: str, *, special: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    @cached_property
    def embeddings(self) -> torch.Tensor:
        """The input embedding matrix, ``[vocab, d_model]``."""
        return self.model.get_input_embeddings().weight

    @cached_property
    def disallowed(self) -> torch.Tensor:
        """Token ids a suffix may not use: non-ASCII or unprintable text, special tokens, and
        embedding rows past the tokenizer's vocabulary."""
        tok = self.tokenizer
        rows = self.embeddings.shape[0]
        texts = tok.batch_decode([[i] for i in range(min(rows, len(tok)))])
        bad = [i for i, t in enumerate(texts) if not (t.isascii() and t.isprintable() and t)]
        bad += [i for i in tok.all_special_ids if i is not None]
        bad += list(range(len(tok), rows))
        return torch.tensor(sorted(set(bad)), dtype=torch.long, device=self.embeddings.device)


@dataclass(frozen=True)
class Layout:
    """One goal's token layout: ``before`` + suffix + ``after`` is the user turn as the engine
    sends it; ``target`` is the completion to make likely (ids, 1-D)."""

    goal: str
    before: torch.Tensor
    after: torch.Tensor
    target: torch.Tensor


def layout(box: WhiteBox, goal: str, target: str) -> Layout:
    rendered = box.render(Prompt(id="gcg", text=goal + _MARK, chat=True))
    before, after = rendered.split(_MARK, 1)
    device = box.embeddings.device
    ids = lambda ids: torch.tensor(ids, dtype=torch.long, device=device)  # noqa: E731
    return Layout(
        goal,
        ids(box.encode(before, special=box.add_special_tokens)),
        ids(box.encode(after)),
        ids(box.encode(target)),
    )


def retokenizes(box: WhiteBox, lay: Layout, candidates: torch.Tensor) -> torch.Tensor:
    """Which candidate suffixes (``[n, suffix_len]``) come back as the same ids when their prompt is
    decoded, rendered and tokenized the way the engine sends it (a bool mask ``[n]``)."""
    keep = []
    for row in candidates.tolist():
        full = box.encode(box.render(query_prompt(box, lay, row)), special=box.add_special_tokens)
        keep.append(full == lay.before.tolist() + row + lay.after.tolist())
    return torch.tensor(keep, dtype=torch.bool)


def query_prompt(box: WhiteBox, lay: Layout, suffix: list[int]) -> Prompt:
    return Prompt(id="gcg", text=lay.goal + box.tokenizer.decode(suffix), chat=True)


def _forward(box: WhiteBox, keep: int, **inputs: Any) -> Any:
    try:
        return box.model(**inputs, logits_to_keep=keep)
    except TypeError:  # a model class without logits_to_keep
        return box.model(**inputs)


def prefix_states(box: WhiteBox, lay: Layout) -> KeysValues:
    """Each layer's keys and values over ``lay.before`` (batch 1): what every candidate of the goal
    computes first, computed once."""
    with torch.no_grad():
        out = _forward(box, 1, inputs_embeds=box.embeddings[lay.before].unsqueeze(0), use_cache=True)
    return returned_keys_values(out)


def target_losses(
    box: WhiteBox, lay: Layout, suffix_embeds: torch.Tensor, prefix: KeysValues | None = None
) -> torch.Tensor:
    """The mean cross-entropy of the target tokens after each suffix, ``[batch]``; suffix_embeds is
    ``[batch, suffix_len, d_model]``. With ``prefix`` (:func:`prefix_states` of ``lay``) only the
    tokens from the suffix on run, on those keys and values; without it, the whole prompt runs."""
    emb = box.embeddings
    n = suffix_embeds.shape[0]
    parts = [None, emb[lay.after], emb[lay.target]]
    if prefix is None:
        parts.insert(0, emb[lay.before])
    x = torch.cat([suffix_embeds if p is None else p.unsqueeze(0).expand(n, -1, -1) for p in parts], dim=1)
    t = lay.target.shape[0]
    if prefix is None:
        out = _forward(box, t + 1, inputs_embeds=x, use_cache=False)
    else:
        start = lay.before.shape[0]
        cache = cache_of(
            [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in prefix], box.model.config
        )
        positions = torch.arange(start, start + x.shape[1], device=x.device).expand(n, -1)
        out = _forward(box, t + 1, inputs_embeds=x, position_ids=positions, cache=cache, use_cache=True)
    logits = out.logits[:, -t - 1 : -1].float()
    labels = lay.target.unsqueeze(0).expand(n, -1)
    return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(dim=1)


def token_gradient(
    box: WhiteBox, lay: Layout, suffix: torch.Tensor, prefix: KeysValues | None = None
) -> torch.Tensor:
    """d loss / d one-hot(suffix), each row normalised, ``[suffix_len, vocab]`` (``prefix`` as in
    :func:`target_losses`: the tokens before the suffix do not depend on it)."""
    emb = box.embeddings
    one_hot = torch.zeros(suffix.shape[0], emb.shape[0], dtype=emb.dtype, device=emb.device)
    one_hot.scatter_(1, suffix.unsqueeze(1), 1.0)
    one_hot.requires_grad_(True)
    with torch.enable_grad():
        loss = target_losses(box, lay, (one_hot @ emb).unsqueeze(0), prefix)[0]
        (grad,) = torch.autograd.grad(loss, one_hot)
    return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def sample_candidates(
    suffix: torch.Tensor,
    grad: torch.Tensor,
    disallowed: torch.Tensor,
    topk: int,
    width: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``width`` copies of ``suffix``, each with one random position set to one of its ``topk``
    allowed tokens of most negative gradient, ``[width, suffix_len]`` (duplicates removed, the
    current suffix left out)."""
    grad = grad.detach().float().clone()
    grad[:, disallowed] = math.inf
    top = (-grad).topk(min(topk, grad.shape[1]), dim=1).indices.cpu()  # [suffix_len, topk]
    n = suffix.shape[0]
    pos = torch.randint(0, n, (width,), generator=generator)
    pick = torch.randint(0, top.shape[1], (width,), generator=generator)
    out = suffix.cpu().repeat(width, 1)
    out[torch.arange(width), pos] = top[pos, pick]
    out = torch.unique(out, dim=0)
    return out[(out != suffix.cpu()).any(dim=1)].to(suffix.device)


class SuffixSearch:
    """One goal's GCG search: ``step()`` runs one optimisation step; ``suffix`` and ``loss`` are
    the current best, ``history`` the loss after every step (index 0: the initial suffix)."""

    def __init__(self, box: WhiteBox, goal: str, config: GCGConfig, seed: int, init: list[int] | None = None):
        self.box, self.config = box, config
        self.layout = layout(box, goal, target_string(goal))
        digest = hashlib.sha256(f"{seed}/{goal}".encode()).digest()
        self.generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        if init is None:  # nanogcg's start, "x x x ...", one token a word in most tokenizers
            init = box.encode(" x" * config.suffix_tokens)
        self.suffix = torch.tensor(init, dtype=torch.long, device=box.embeddings.device)
        self.prefix = prefix_states(box, self.layout) if config.prefix_cache else None
        if not retokenizes(box, self.layout, self.suffix.unsqueeze(0))[0]:
            raise ValueError(
                f"the initial suffix {box.tokenizer.decode(init)!r} does not tokenize back to itself "
                "inside this model's chat template"
            )
        self.loss = float(self.losses(self.suffix.unsqueeze(0))[0])
        self.history = [self.loss]
        self.steps = 0
        self.dropped = 0  # candidates dropped for not re-tokenizing to themselves

    @torch.no_grad()
    def losses(self, candidates: torch.Tensor) -> torch.Tensor:
        emb = self.box.embeddings
        size = self.config.batch_size
        out = [
            target_losses(self.box, self.layout, emb[candidates[i : i + size]], self.prefix)
            for i in range(0, candidates.shape[0], size)
        ]
        return torch.cat(out).cpu()

    def step(self) -> float:
        cfg, box = self.config, self.box
        grad = token_gradient(box, self.layout, self.suffix, self.prefix)
        candidates = sample_candidates(
            self.suffix, grad, box.disallowed, cfg.topk, cfg.search_width, self.generator
        )
        keep = retokenizes(box, self.layout, candidates) if len(candidates) else torch.zeros(0, dtype=bool)
        self.dropped += int((~keep).sum())
        candidates = candidates[keep.to(candidates.device)]
        if len(candidates):
            losses = self.losses(candidates)
            best = int(losses.argmin())
            if float(losses[best]) < self.loss:
                self.suffix, self.loss = candidates[best], float(losses[best])
        self.steps += 1
        self.history.append(self.loss)
        return self.loss

    @property
    def suffix_text(self) -> str:
        return self.box.tokenizer.decode(self.suffix.tolist())

    @property
    def message(self) -> str:
        """The user message the target is sent: the goal followed by the suffix."""
        return self.layout.goal + self.suffix_text
