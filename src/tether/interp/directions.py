"""Refusal directions as small pure functions: difference of means, refusal score, KL, cosine,
separation, and directional ablation baked into the weights.

Shapes: activations per prompt are ``[positions, layers, d_model]``; a set of candidate directions is
the same ``[positions, layers, d_model]`` (Arditi et al. 2024, one candidate per post-instruction
position and layer).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from tether.errors import ModelLoadError
from tether.interp.hooks import DecoderLayers, find_layers

# Conventional names of the projection that writes a module's output into the residual stream.
ATTENTION_WRITERS = ("o_proj", "out_proj", "dense")
MLP_WRITERS = ("down_proj", "fc2", "dense_4h_to_h", "fc_out")


def mean_difference(harmful: torch.Tensor, harmless: torch.Tensor) -> torch.Tensor:
    """Candidate directions: mean over prompts of ``harmful`` minus that of ``harmless``, each
    ``[prompts, positions, layers, d]``; returns ``[positions, layers, d]``."""
    return harmful.float().mean(0) - harmless.float().mean(0)


def refusal_score(logits: torch.Tensor, refusal_ids: Sequence[int]) -> torch.Tensor:
    """Per row of next-token ``logits`` ``[batch, vocab]``: log p(refusal) − log(1 − p(refusal)),
    where p(refusal) is the probability mass of the refusal-opening tokens."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    refuse = torch.logsumexp(logp[:, list(refusal_ids)], dim=-1)
    other = torch.log1p(-refuse.exp().clamp(max=1 - 1e-7))
    return refuse - other


def kl_divergence(clean_logits: torch.Tensor, new_logits: torch.Tensor) -> torch.Tensor:
    """KL(clean ‖ new) in nats per row of next-token logits ``[batch, vocab]``."""
    p = torch.log_softmax(clean_logits.float(), dim=-1)
    q = torch.log_softmax(new_logits.float(), dim=-1)
    return (p.exp() * (p - q)).sum(-1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine along the last axis."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def separation(harmful: torch.Tensor, harmless: torch.Tensor, direction: torch.Tensor) -> float | None:
    """How far apart harmful and harmless activations ``[prompts, d]`` lie along ``direction``:
    the difference of the mean projections over their pooled standard deviation (Cohen's d). None
    for a zero direction."""
    if float(direction.norm()) == 0.0:
        return None
    unit = direction.float() / direction.float().norm()
    a, b = harmful.float() @ unit, harmless.float() @ unit
    pooled = torch.sqrt((a.var(unbiased=True) + b.var(unbiased=True)) / 2).clamp(min=1e-8)
    return float((a.mean() - b.mean()) / pooled)


def random_like(direction: torch.Tensor, seed: int) -> torch.Tensor:
    """A random direction with ``direction``'s norm (the control)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(direction.shape, generator=gen, dtype=torch.float32)
    return (r / r.norm() * direction.float().norm()).to(direction.dtype)


# --- weight orthogonalisation ------------------------------------------------------------------------


def _writer(module: torch.nn.Module, names: Sequence[str], where: str) -> torch.nn.Linear:
    for name in names:
        found = getattr(module, name, None)
        if isinstance(found, torch.nn.Linear):
            return found
    raise ModelLoadError(
        f"no output projection {where}.{'|'.join(names)} (a torch Linear) to orthogonalise",
        hint="weight orthogonalisation needs the layer's writes to the residual stream as Linear modules",
    )


def writers(model: torch.nn.Module, layers: DecoderLayers | None = None) -> list[torch.nn.Linear]:
    """Every Linear that writes into the residual stream: per layer, attention's and the MLP's output
    projections."""
    layers = layers or find_layers(model)
    out = []
    for i in range(len(layers)):
        out.append(_writer(layers.attn(i), ATTENTION_WRITERS, f"{layers.path}.{i}.{layers.attention}"))
        out.append(_writer(layers.mlp_of(i), MLP_WRITERS, f"{layers.path}.{i}.{layers.mlp}"))
    return out


def _orthogonalise_rows(weight: torch.Tensor, unit: torch.Tensor) -> None:
    """Embedding rows ``[vocab, d]``: each row loses its component along ``unit``."""
    weight -= torch.outer(weight @ unit, unit)


def _orthogonalise_output(linear: torch.nn.Linear, unit: torch.Tensor) -> None:
    """A Linear's outputs lose their component along ``unit``: W ← W − r̂ (r̂ᵀ W), b ← b − (b·r̂) r̂."""
    linear.weight -= torch.outer(unit, unit @ linear.weight)
    if linear.bias is not None:
        linear.bias -= (linear.bias @ unit) * unit


@contextmanager
def orthogonalised(model: torch.nn.Module, direction: torch.Tensor) -> Iterator[None]:
    """Directional ablation baked into the weights for the length of the block (Arditi et al.'s
    weight orthogonalisation): the embeddings and every attention and MLP output projection stop
    writing ``direction``. A tied LM head keeps the original embeddings (it reads the stream, it
    does not write it). The weights are restored afterwards, however the block ends."""
    layers = find_layers(model)
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    targets = [embed, *writers(model, layers)]
    saved = [(m, m.weight.detach().clone(), None if getattr(m, "bias", None) is None else m.bias.detach().clone())
             for m in targets]  # fmt: skip
    tied = head is not None and head.weight is embed.weight
    try:
        with torch.no_grad():
            if tied:
                head.weight = torch.nn.Parameter(embed.weight.detach().clone(), requires_grad=False)
            unit = (direction / direction.norm()).to(device=embed.weight.device, dtype=embed.weight.dtype)
            _orthogonalise_rows(embed.weight, unit)
            for linear in targets[1:]:
                _orthogonalise_output(linear, unit)
        yield
    finally:
        with torch.no_grad():
            for module, weight, bias in saved:
                module.weight.copy_(weight)
                if bias is not None:
                    module.bias.copy_(bias)
            if tied:
                head.weight = embed.weight


__all__ = [
    "cosine",
    "kl_divergence",
    "mean_difference",
    "orthogonalised",
    "random_like",
    "refusal_score",
    "separation",
    "writers",
]
