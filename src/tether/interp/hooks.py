"""Named hook points on a Hugging Face decoder model, TransformerLens style.

Every decoder layer ``i`` has four points (``blocks.{i}.<point>``):

* ``hook_resid_pre``: the residual stream entering the layer (layer 0: the embeddings);
* ``hook_attn_out``: what the attention module returns, before it is added to the stream;
* ``hook_mlp_out``: what the MLP returns, before it is added;
* ``hook_resid_post``: the residual stream leaving the layer.

Tensors are ``[batch, tokens, d_model]``. A hook is ``fn(tensor, name) -> tensor | None``: a returned
tensor replaces the activation, None leaves it. :func:`hooked` registers hooks for the length of a
``with`` block and removes them on the way out, exceptions included, so a model is never left
patched. Layers are found by structure, never by model name: the first ``ModuleList`` whose modules
each have an attention module (``self_attn`` or ``attn``) and an ``mlp``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from tether.errors import ModelLoadError

POINTS = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post")
ATTENTION_NAMES = ("self_attn", "attn")
MLP_NAMES = ("mlp",)
_NAME = re.compile(r"^blocks\.(\d+)\.(hook_\w+)$")

HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]


def hook_name(layer: int, point: str) -> str:
    return f"blocks.{layer}.{point}"


@dataclass(frozen=True)
class DecoderLayers:
    """Where a model's decoder layers are: ``path`` is the dotted module path of the ModuleList."""

    path: str
    layers: Sequence[torch.nn.Module]
    attention: str
    mlp: str

    def __len__(self) -> int:
        return len(self.layers)

    def attn(self, i: int) -> torch.nn.Module:
        return getattr(self.layers[i], self.attention)

    def mlp_of(self, i: int) -> torch.nn.Module:
        return getattr(self.layers[i], self.mlp)

    def names(self, points: Sequence[str] = POINTS) -> list[str]:
        return [hook_name(i, p) for i in range(len(self)) for p in points]


def _child(module: torch.nn.Module, names: Sequence[str]) -> str | None:
    return next((n for n in names if isinstance(getattr(module, n, None), torch.nn.Module)), None)


def find_layers(model: torch.nn.Module) -> DecoderLayers:
    """The decoder layers of ``model`` (a PEFT wrapper is looked through). An unsupported structure
    is a ModelLoadError naming the module path that is missing."""
    candidates: list[tuple[str, torch.nn.ModuleList]] = [
        (name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)
    ]
    for name, layers in candidates:
        first = layers[0]
        attention, mlp = _child(first, ATTENTION_NAMES), _child(first, MLP_NAMES)
        if attention and mlp and all(_child(m, (attention,)) and _child(m, (mlp,)) for m in layers):
            return DecoderLayers(name, list(layers), attention, mlp)
    if not candidates:
        raise ModelLoadError(
            f"unsupported decoder structure: {type(model).__name__} has no ModuleList of decoder layers "
            "(looked for e.g. model.layers)",
            hint="interpretability needs a decoder-only transformer whose layers sit in a ModuleList",
        )
    name, layers = candidates[0]
    missing = [
        f"{name}.0.{'|'.join(group)}"
        for group in (ATTENTION_NAMES, MLP_NAMES)
        if not _child(layers[0], group)
    ]
    raise ModelLoadError(
        f"unsupported decoder structure: no module {', '.join(missing)}",
        hint=f"each layer of the decoder needs an attention module ({' or '.join(ATTENTION_NAMES)}) "
        f"and an 'mlp' module",
    )


def _first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple | list) else value


def _replace_first(value: Any, tensor: torch.Tensor) -> Any:
    if isinstance(value, tuple):
        return (tensor, *value[1:])
    if isinstance(value, list):
        return [tensor, *value[1:]]
    return tensor


def parse_name(name: str, n_layers: int) -> tuple[int, str]:
    found = _NAME.match(name)
    if not found or found.group(2) not in POINTS or int(found.group(1)) >= n_layers:
        raise KeyError(f"unknown hook point {name!r}: use blocks.<0..{n_layers - 1}>.<{'|'.join(POINTS)}>")
    return int(found.group(1)), found.group(2)


def _register(layers: DecoderLayers, name: str, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
    layer, point = parse_name(name, len(layers))
    if point == "hook_resid_pre":

        def pre(module, args, kwargs):
            if args:
                new = fn(args[0], name)
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"], name)
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return layers.layers[layer].register_forward_pre_hook(pre, with_kwargs=True)
    module = {
        "hook_attn_out": layers.attn(layer),
        "hook_mlp_out": layers.mlp_of(layer),
        "hook_resid_post": layers.layers[layer],
    }[point]

    def post(module, args, output):
        new = fn(_first(output), name)
        return None if new is None else _replace_first(output, new)

    return module.register_forward_hook(post)


@contextmanager
def hooked(model: torch.nn.Module, hooks: Mapping[str, HookFn | Sequence[HookFn]]) -> Iterator[DecoderLayers]:
    """Run ``model`` with ``hooks`` ({hook point: fn or [fns]}) inside the block; every hook is
    removed when it ends, however it ends."""
    layers = find_layers(model)
    handles = []
    try:
        for name, fns in hooks.items():
            for fn in fns if isinstance(fns, list | tuple) else [fns]:
                handles.append(_register(layers, name, fn))
        yield layers
    finally:
        for handle in handles:
            handle.remove()


def run_with_cache(
    model: torch.nn.Module,
    names: Sequence[str] | None = None,
    hooks: Mapping[str, HookFn | Sequence[HookFn]] | None = None,
    **inputs: Any,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """One forward of ``model(**inputs)`` (no gradients); the model output and the activations at
    ``names`` (default: every point of every layer), detached. ``hooks`` run first, so the cache
    holds what an intervention left."""
    layers = find_layers(model)
    wanted = list(names) if names is not None else layers.names()
    cache: dict[str, torch.Tensor] = {}

    def keep(tensor: torch.Tensor, name: str) -> None:
        cache[name] = tensor.detach()

    combined: dict[str, list[HookFn]] = {}
    for name, fns in (hooks or {}).items():
        combined.setdefault(name, []).extend(fns if isinstance(fns, list | tuple) else [fns])
    for name in wanted:
        combined.setdefault(name, []).append(keep)
    with torch.no_grad(), hooked(model, combined):
        output = model(**inputs)
    return output, cache


@contextmanager
def layer_output_kinds(layers: DecoderLayers) -> Iterator[list[bool]]:
    """Inside the block, every forward of the first decoder layer appends whether it returned a tuple
    (transformers 4.x layers do, 5.x return the tensor): what :func:`skipping_layers` must return."""
    kinds: list[bool] = []
    handle = layers.layers[0].register_forward_hook(lambda _m, _a, out: kinds.append(isinstance(out, tuple)))
    try:
        yield kinds
    finally:
        handle.remove()


@contextmanager
def skipping_layers(layers: DecoderLayers, below: int, returns_tuple: bool) -> Iterator[None]:
    """Inside the block, the layers under ``below`` pass their input through unchanged: for a caller
    that already knows their work and puts what enters layer ``below`` in place with a
    ``hook_resid_pre`` hook there. Every layer is put back as it was, however the block ends."""

    def passthrough(hidden_states: torch.Tensor, *_args: Any, **_kwargs: Any) -> Any:
        return (hidden_states,) if returns_tuple else hidden_states

    # A layer may carry a forward of its own already (accelerate's device-map hooks set one): it is
    # put back as it was.
    saved = [layer.__dict__.get("forward") for layer in layers.layers[:below]]
    try:
        for layer in layers.layers[:below]:
            layer.forward = passthrough
        yield
    finally:
        for layer, previous in zip(layers.layers[:below], saved, strict=True):
            if previous is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = previous


# --- interventions -----------------------------------------------------------------------------------


def project_out(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``x`` without its component along ``direction`` (any norm): x - (x·r̂) r̂."""
    unit = (direction / direction.norm()).to(device=x.device, dtype=x.dtype)
    return x - (x @ unit).unsqueeze(-1) * unit


def ablation_hooks(layers: DecoderLayers, direction: torch.Tensor) -> dict[str, HookFn]:
    """Directional ablation everywhere (Arditi et al. 2024): ``direction`` projected out of the stream
    entering every layer and out of every attention and MLP write, so no layer reads or adds it."""
    fn: HookFn = lambda x, _name: project_out(x, direction)  # noqa: E731
    points = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")
    return {hook_name(i, p): fn for i in range(len(layers)) for p in points}


def addition_hooks(layer: int, vector: torch.Tensor) -> dict[str, HookFn]:
    """Activation addition: ``vector`` added to the stream entering ``layer``, at every position."""
    return {
        hook_name(layer, "hook_resid_pre"): lambda x, _name: x + vector.to(device=x.device, dtype=x.dtype)
    }


def patch_hook(source: torch.Tensor, positions: Sequence[int] | None = None) -> HookFn:
    """Replace the activation with ``source`` (same shape) at ``positions`` (all when None)."""

    def fn(x: torch.Tensor, _name: str) -> torch.Tensor:
        out = x.clone()
        if positions is None:
            out[:] = source.to(device=x.device, dtype=x.dtype)
        else:
            out[:, list(positions)] = source[:, list(positions)].to(device=x.device, dtype=x.dtype)
        return out

    return fn


__all__ = [
    "POINTS",
    "DecoderLayers",
    "HookFn",
    "ablation_hooks",
    "addition_hooks",
    "find_layers",
    "hook_name",
    "hooked",
    "layer_output_kinds",
    "patch_hook",
    "project_out",
    "run_with_cache",
    "skipping_layers",
]
