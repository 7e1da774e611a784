"""Forward passes over prompts for interpretability: the prompts tokenised exactly as the engine
generates from them (``Engine.encode_prompt``), left-padded in batches, read at the last positions.

Left padding puts every prompt's last token in the last column, so "position −k" means the same
template token in every row of a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tether.engine.types import Prompt
from tether.interp.hooks import HookFn, hook_name, hooked
from tether.models.head import contiguous_head_input
from tether.models.padding import left_pad, positions_from_mask

_MARK = "\x00TETHER-USER-MESSAGE\x00"


def encode(engine: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of each prompt as the engine would feed it to generate."""
    return [engine.encode_prompt(p, 1)[0] for p in prompts]


def post_instruction_tokens(engine: Any) -> list[str]:
    """The tokens the chat template puts after the user's message (end of turn, assistant header):
    where Arditi et al. read the refusal direction. Without a chat template, the last token."""
    tok = engine.tokenizer
    rendered = engine.render(Prompt(id="probe", text=_MARK))
    suffix = rendered.split(_MARK, 1)[1] if _MARK in rendered else ""
    ids = tok(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    probe = engine.encode_prompt(Prompt(id="probe", text="Hello there"), 1)[0]
    if not ids or probe[-len(ids) :] != ids:
        return [tok.decode(probe[-1:])]
    return [tok.decode([i]) for i in ids]


def _batches(n: int, size: int) -> list[range]:
    return [range(s, min(n, s + size)) for s in range(0, n, size)]


def _forward(engine: Any, rows: list[list[int]], hooks: Mapping[str, Any] | None) -> torch.Tensor:
    """The rows' next-token logits ``[rows, 1, vocab]``: the head runs on the last position only
    (every row ends in the last column), on a contiguous copy (:mod:`tether.models.head`)."""
    model = engine.model
    pad = engine.tokenizer.pad_token_id
    pad = pad if pad is not None else engine.tokenizer.eos_token_id
    ids, mask = left_pad(rows, pad, engine.loaded.device)
    with torch.no_grad(), hooked(model, hooks or {}), contiguous_head_input(model, float32=True):
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions_from_mask(mask),
            use_cache=False,
            logits_to_keep=1,
        )
    return out.logits


def last_logits(
    engine: Any,
    rows: Sequence[list[int]],
    hooks: Mapping[str, HookFn | Sequence[HookFn]] | None = None,
    *,
    batch_size: int = 16,
) -> torch.Tensor:
    """Next-token logits after each prompt, ``[prompts, vocab]`` (float32, on the CPU)."""
    out = []
    for span in _batches(len(rows), batch_size):
        out.append(_forward(engine, [rows[i] for i in span], hooks)[:, -1].float().cpu())
    return torch.cat(out)


def resid_pre(
    engine: Any, rows: Sequence[list[int]], n_positions: int, *, batch_size: int = 16
) -> torch.Tensor:
    """The residual stream entering every layer at the last ``n_positions`` tokens of each prompt,
    ``[prompts, n_positions, layers, d_model]`` (float32, CPU)."""
    from tether.interp.hooks import find_layers

    n_layers = len(find_layers(engine.model))
    chunks = []
    for span in _batches(len(rows), batch_size):
        store: dict[int, torch.Tensor] = {}

        def keep(x: torch.Tensor, name: str, _store=store) -> None:
            _store[int(name.split(".")[1])] = x[:, -n_positions:].detach().float().cpu()

        hooks = {hook_name(i, "hook_resid_pre"): keep for i in range(n_layers)}
        _forward(engine, [rows[i] for i in span], hooks)
        chunks.append(torch.stack([store[i] for i in range(n_layers)], dim=2))
    return torch.cat(chunks)


__all__ = ["encode", "last_logits", "post_instruction_tokens", "resid_pre"]
