"""The LM head on the rows a caller keeps: a contiguous copy instead of a strided view.

A forward with ``logits_to_keep=1`` keeps each row's last hidden state: a ``(rows, 1, d)`` view
strided by the whole sequence. On a CPU, ``F.linear`` with SmolLM2-135M's 49k x 576 head on such a
view takes time in proportion to its rows, as if row by row: 40 rows of 160 tokens took 232 ms in
float32 against about 10 ms on a contiguous copy, 150 rows 817 ms against 90 ms, and in bfloat16 40
rows took 2.5 s and 2.2 GB against about 12 ms (torch 2.13, 2 cores).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def contiguous_head_input(model, *, float32: bool = False) -> Iterator[None]:
    """The model's LM head fed a contiguous copy of its input for the calls inside.

    A float32 head is left alone unless ``float32``: there the copy's logits differ from the strided
    call's in the last bits (bfloat16's are the same bits), so the engine keeps the strided call and
    with it every float32 result measured before (a batched prefill pays about 0.2 s), while
    interpretability, which caches nothing per item, takes the copy."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if head is None or weight is None or (weight.dtype == torch.float32 and not float32):
        yield
        return
    handle = head.register_forward_pre_hook(lambda _, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


__all__ = ["contiguous_head_input"]
