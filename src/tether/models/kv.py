"""Keys and values out of one model call and into the next: what tracing, patching and GCG reuse
instead of running a shared prefix again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

KeysValues = list[tuple[torch.Tensor, torch.Tensor]]


def returned_keys_values(out: Any) -> KeysValues:
    """Each layer's (keys, values) of the cache a ``use_cache=True`` call returned (transformers
    names it ``cache`` from 5.20 and ``past_key_values`` before)."""
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    return [(layer.keys, layer.values) for layer in cache.layers]


def cache_of(keys_values: Sequence[tuple[torch.Tensor, torch.Tensor]], config: Any) -> Any:
    """A ``DynamicCache`` holding ``keys_values`` (one pair a layer, ``[batch, heads, tokens, dim]``)
    for a call to continue from; ``config`` gives the layer kinds (sliding windows, say)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=list(keys_values), config=config)
