"""``InterventionEngine``: an ``EngineLike`` over a loaded model with an intervention in force while
it generates or scores, so the audit's tasks and the refusal judge measure an ablated or steered
model through the ordinary engine.

The intervention is a context manager factory: :func:`tether.interp.directions.orthogonalised`
(directional ablation as weights) or :func:`tether.interp.hooks.hooked` with addition hooks. It is
entered per call and left afterwards, so the model is plain between calls. The fingerprint names
the intervention and its vector, so the audit's per-item cache never mixes it with the plain model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from tether.interp.directions import orthogonalised
from tether.interp.hooks import addition_hooks, hooked


def vector_fingerprint(base: str, kind: str, vector: torch.Tensor, layer: int | None = None) -> str:
    digest = hashlib.sha256(vector.detach().float().cpu().numpy().tobytes())
    digest.update(f"{base}\x00{kind}\x00{layer}".encode())
    return f"interp:{digest.hexdigest()[:24]}"


class InterventionEngine:
    """The engine ``inner`` with ``intervention()`` entered around every generate and score call."""

    def __init__(
        self, inner: Any, name: str, fingerprint: str, intervention: Callable[[], AbstractContextManager]
    ):
        self.inner = inner
        self._name = name
        self._fingerprint = fingerprint
        self.intervention = intervention

    @property
    def name(self) -> str:
        return self._name

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def has_chat_template(self) -> bool:
        return self.inner.has_chat_template

    @property
    def model(self):
        return self.inner.model

    @property
    def tokenizer(self):
        return self.inner.tokenizer

    @property
    def loaded(self):
        return self.inner.loaded

    def render(self, prompt):
        return self.inner.render(prompt)

    def encode_prompt(self, prompt, max_new_tokens: int):
        return self.inner.encode_prompt(prompt, max_new_tokens)

    def generate(self, prompts, params=None, **kwargs):
        with self.intervention():
            return self.inner.generate(prompts, params, **kwargs)

    def score(self, requests, **kwargs):
        with self.intervention():
            return self.inner.score(requests, **kwargs)


def ablated(engine: Any, direction: torch.Tensor, label: str = "ablated") -> InterventionEngine:
    """``direction`` projected out of every residual write (weight orthogonalisation)."""
    return InterventionEngine(
        engine,
        f"{engine.name} {label}",
        vector_fingerprint(engine.fingerprint, "ablate", direction),
        lambda: orthogonalised(engine.model, direction),
    )


def added(engine: Any, vector: torch.Tensor, layer: int, label: str = "added") -> InterventionEngine:
    """``vector`` added to the residual stream entering ``layer``, at every position."""
    return InterventionEngine(
        engine,
        f"{engine.name} {label}",
        vector_fingerprint(engine.fingerprint, "add", vector, layer),
        lambda: hooked(engine.model, addition_hooks(layer, vector)),
    )


__all__ = ["InterventionEngine", "ablated", "added", "vector_fingerprint"]
