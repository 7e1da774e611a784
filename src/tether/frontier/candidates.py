"""Mitigation candidates built in memory from BASE and ALIGNED: never a full model on disk.

A candidate is a :class:`Recipe`: one α per decoder layer (plus one for the embeddings, one for the
final norm and LM head), or a PEFT merge of the aligned adapter with a capability adapter. α weighs
ALIGNED: α = 0 is BASE, α = 1 is ALIGNED (Lin et al. write θ = α'·θ_pre + (1−α')·θ_RLHF, so their
α' is 1 − α here).

:class:`CandidateBuilder` holds one working model and turns it into any recipe in place:

* ALIGNED is a full model: every parameter becomes (1 − α)·θ_base + α·θ_aligned, from copies of
  both kept in memory (the endpoints are copied, so α = 0 and α = 1 are bit-exact).
* ALIGNED is a LoRA adapter: the adapter's delta is scaled, layer by layer, with PEFT's
  ``LoraLayer.set_scale`` (scale α ⇒ W + α·(s·BA)); the base weights are never touched.
* a merge (TIES, DARE) is PEFT's ``add_weighted_adapter`` of the aligned and the capability adapters.

Each candidate's engine (:class:`CandidateEngine`) has a fingerprint computed from the recipe and the
two models' fingerprints, so the audit's per-item cache knows it before any weight is touched, and a
candidate whose items are all cached is never built. α = 0 and α = 1 carry BASE's and ALIGNED's own
fingerprints, so items an ordinary ``tether audit BASE ALIGNED`` scored into the same cache are reused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.config import EngineConfig
from tether.errors import ConfigError, ModelLoadError
from tether.runs import NULL_TRACER, Tracer

_LAYER = re.compile(r"\.layers\.(\d+)\.")
MERGE_METHODS = ("ties", "dare_linear", "dare_ties")


@dataclass(frozen=True)
class Recipe:
    """What to build. ``alphas``: one α per block (1 block = plain interpolation); ``merge``: a PEFT
    combination type, with ``weights`` (aligned, capability) and ``density``."""

    family: str
    alphas: tuple[float, ...] = (1.0,)
    merge: str | None = None
    weights: tuple[float, float] = (1.0, 1.0)
    density: float = 0.5
    seed: int = 0
    adapter: str | None = None  # a LoRA adapter on BASE trained by the frontier (replay, retraining)

    def key(self, n_layers: int) -> dict[str, Any]:
        """The canonical description: per-layer α for interpolations (so per-block (a, a, a) and a
        single α = a are one candidate), the merge's parameters otherwise."""
        if self.adapter:
            return {"adapter": self.adapter}
        if self.merge:
            return {
                "merge": self.merge,
                "on": "deltas",  # not the A/B factors apart, as merges before 2026-12-03 were
                "weights": list(self.weights),
                "density": self.density,
                "seed": self.seed,
            }
        layers, embed, head = layer_alphas(self.alphas, n_layers)
        return {"layers": layers, "embed": embed, "head": head}

    @property
    def uniform(self) -> float | None:
        """The one α of an interpolation whose blocks all agree, else None."""
        if self.merge or self.adapter or len(set(self.alphas)) != 1:
            return None
        return self.alphas[0]


def block_bounds(n_layers: int, blocks: int) -> list[range]:
    """``blocks`` contiguous runs of layers covering 0..n_layers-1; earlier blocks take the remainder."""
    if blocks < 1 or blocks > n_layers:
        raise ConfigError(
            f"{blocks} block(s) cannot split a model with {n_layers} decoder layer(s)",
            where="per_block.blocks",
            hint=f"use between 1 and {n_layers}",
        )
    size, extra = divmod(n_layers, blocks)
    out, start = [], 0
    for b in range(blocks):
        stop = start + size + (1 if b < extra else 0)
        out.append(range(start, stop))
        start = stop
    return out


def layer_alphas(alphas: Sequence[float], n_layers: int) -> tuple[list[float], float, float]:
    """(α per decoder layer, α of the embeddings, α of the final norm + LM head): the embeddings go
    with the first block, the head with the last."""
    per_layer = [0.0] * n_layers
    for alpha, span in zip(alphas, block_bounds(n_layers, len(alphas)), strict=True):
        for i in span:
            per_layer[i] = float(alpha)
    return per_layer, float(alphas[0]), float(alphas[-1])


def param_alpha(name: str, per_layer: Sequence[float], embed: float, head: float) -> float:
    """The α of a parameter (or LoRA module) by its name."""
    found = _LAYER.search(f".{name}.")
    if found:
        return per_layer[int(found.group(1))]
    return embed if "embed" in name else head


def is_adapter(spec: str) -> bool:
    return (Path(spec).expanduser() / "adapter_config.json").is_file()


def adapter_base_spec(spec: str) -> str:
    from tether.models.load import _adapter_base

    return _adapter_base(Path(spec).expanduser(), None)


def base_fingerprint(spec: str) -> str:
    """The fingerprint ``load(spec)`` gives a non-adapter spec, without loading its weights."""
    from tether.models.cache import directory_fingerprint
    from tether.models.load import _resolve_base_dir

    source, _ = _resolve_base_dir(spec)
    return (directory_fingerprint(source) if isinstance(source, Path) else f"hf:{source}")[:32]


def check_same_base(
    base: str, aligned: str, capability: str | None = None, unmitigated: str | None = None
) -> None:
    """Before any model loads: an adapter (ALIGNED, the capability adapter, the unmitigated model
    recovery is measured against) must sit on BASE. An error names both models."""
    if is_adapter(base):
        raise ConfigError(
            f"BASE {base} is a LoRA adapter; the frontier interpolates from a full base model",
            where="BASE",
            hint="pass the adapter's base model as BASE",
        )
    if unmitigated is not None and not is_adapter(unmitigated):
        raise ConfigError(
            f"recovery.unmitigated {unmitigated} is not a LoRA adapter; the frontier builds every model it "
            "audits from BASE",
            where="recovery.unmitigated",
            hint="pass the unmitigated aligned adapter (trained on BASE), or leave it empty to measure against ALIGNED",
        )
    want = base_fingerprint(base)[:16]
    for spec, where in (
        (aligned, "ALIGNED"),
        (capability, "capability_adapter"),
        (unmitigated, "recovery.unmitigated"),
    ):
        if spec is None or not is_adapter(spec):
            continue
        recorded = adapter_base_spec(spec)
        if is_adapter(recorded) or base_fingerprint(recorded)[:16] != want:
            raise ConfigError(
                f"{where} {spec} is an adapter on {recorded}, not on BASE {base}",
                where=where,
                hint="pass the BASE the adapter was trained from (see its tether_base.json or adapter_config.json)",
            )


@dataclass
class CandidateBuilder:
    """One working model that becomes any recipe in place (see the module docstring)."""

    base_spec: str
    aligned_spec: str
    config: EngineConfig = field(default_factory=EngineConfig)
    capability_spec: str | None = None

    def __post_init__(self) -> None:
        import torch

        from tether.models.load import load

        check_same_base(self.base_spec, self.aligned_spec, self.capability_spec)
        self.lora = is_adapter(self.aligned_spec)
        if self.capability_spec and not self.lora:
            raise ConfigError(
                "a TIES/DARE merge needs ALIGNED to be a LoRA adapter",
                where="capability_adapter",
                hint="pass the aligned adapter directory as ALIGNED, or drop capability_adapter and merges",
            )
        if self.lora:
            self.loaded = load(self.aligned_spec, device=self.config.device, dtype=self.config.dtype)
            self.aligned_fingerprint = self.loaded.fingerprint
            self.base_fingerprint = base_fingerprint(self.base_spec)
            self.base_sd = self.aligned_sd = None
            self.capability_fingerprint = None
            if self.capability_spec:
                from tether.models.cache import directory_fingerprint

                self.loaded.model.load_adapter(
                    str(Path(self.capability_spec).expanduser()), adapter_name="capability"
                )
                self.capability_fingerprint = directory_fingerprint(Path(self.capability_spec).expanduser())[
                    :16
                ]
                self.loaded.model.set_adapter("default")
        else:
            aligned = load(self.aligned_spec, device=self.config.device, dtype=self.config.dtype)
            self.loaded = load(self.base_spec, device=self.config.device, dtype=self.config.dtype)
            self.base_fingerprint, self.aligned_fingerprint = self.loaded.fingerprint, aligned.fingerprint
            self.capability_fingerprint = None
            base_params = dict(self.loaded.model.named_parameters())
            aligned_params = dict(aligned.model.named_parameters())
            shapes = {n: tuple(p.shape) for n, p in base_params.items()}
            other = {n: tuple(p.shape) for n, p in aligned_params.items()}
            if shapes != other:
                differ = sorted(set(shapes) ^ set(other)) or [n for n in shapes if shapes[n] != other[n]]
                raise ConfigError(
                    f"ALIGNED {self.aligned_spec} is not a fine-tune of BASE {self.base_spec}: "
                    f"their parameters differ (first: {differ[0]})",
                    where="ALIGNED",
                    hint="pass the model ALIGNED was trained from as BASE",
                )
            with torch.no_grad():
                self.base_sd = {n: p.detach().clone() for n, p in base_params.items()}
                self.aligned_sd = {n: p.detach().clone() for n, p in aligned_params.items()}
            del aligned, aligned_params
        self.loaded.model.eval()
        self.n_layers = _count_layers(self.loaded.model)
        self._active: str | None = None
        self._base_weights: dict[str, Any] | None = None  # LoRA'd modules' own weights, kept by a merge
        self._weights_moved = False

    # --------------------------------------------------------------------- identity

    def fingerprint(self, recipe: Recipe) -> str:
        if recipe.adapter:
            # What load(adapter) gives it, so an ordinary audit of the same adapter shares the cache.
            from tether.models.cache import directory_fingerprint

            return f"{self.base_fingerprint[:16]}+{directory_fingerprint(Path(recipe.adapter))[:16]}"
        if recipe.uniform == 0.0:
            return self.base_fingerprint
        if recipe.uniform == 1.0:
            return self.aligned_fingerprint
        blob = json.dumps(
            {
                "base": self.base_fingerprint,
                "aligned": self.aligned_fingerprint,
                "capability": self.capability_fingerprint,
                **recipe.key(self.n_layers),
            },
            sort_keys=True,
        )
        return "frontier:" + hashlib.sha256(blob.encode()).hexdigest()[:24]

    # --------------------------------------------------------------------- building

    def activate(self, recipe: Recipe) -> None:
        """Turn the working model into ``recipe`` (a no-op when it already is)."""
        ident = self.fingerprint(recipe)
        if ident == self._active:
            return
        self._active = None  # a failure half-way leaves no stale claim
        self._restore_base()
        if recipe.adapter:
            self._trained_adapter(recipe)
        elif recipe.merge:
            self._merge(recipe)
        elif self.lora:
            self._scale_lora(recipe)
        else:
            self._interpolate(recipe)
        self._active = ident

    def _interpolate(self, recipe: Recipe) -> None:
        import torch

        per_layer, embed, head = layer_alphas(recipe.alphas, self.n_layers)
        with torch.no_grad():
            for name, param in self.loaded.model.named_parameters():
                alpha = param_alpha(name, per_layer, embed, head)
                base, aligned = self.base_sd[name], self.aligned_sd[name]
                if alpha == 0.0:
                    param.copy_(base)
                elif alpha == 1.0:
                    param.copy_(aligned)
                else:
                    param.copy_(base * (1.0 - alpha) + aligned * alpha)

    def _lora_layers(self):
        from peft.tuners.lora import LoraLayer

        return [(n, m) for n, m in self.loaded.model.named_modules() if isinstance(m, LoraLayer)]

    def _scale_lora(self, recipe: Recipe) -> None:
        model = self.loaded.model
        model.set_adapter("default")
        per_layer, embed, head = layer_alphas(recipe.alphas, self.n_layers)
        for name, module in self._lora_layers():
            module.set_scale("default", param_alpha(name, per_layer, embed, head))

    def _merge(self, recipe: Recipe) -> None:
        """The aligned and the capability adapters merged on their deltas (task vectors).

        ``linear`` is PEFT's ``cat``: the factors stacked, exactly w_a * delta_a + w_c * delta_c, as
        an adapter. TIES and DARE are PEFT's ``merge_utils`` on the two deltas of each LoRA'd module,
        written into that module's base weight with the adapters switched off (undone by the next
        activation). Not ``add_weighted_adapter``'s ``ties``/``dare_*``: they combine the A and the B
        factors apart, so two adapters trained apart merge into B_1 A_2 cross terms (136% off TIES of
        the deltas on a test model); nor its ``*_svd`` variants, which take one rank for modules of
        every shape (33% off at the sum of the two ranks, and a full rank fails on k_proj)."""
        import torch
        from peft.utils import merge_utils

        if not self.capability_fingerprint:
            raise ConfigError(
                f"the {recipe.merge} merge needs a capability adapter",
                where="capability_adapter",
                hint="set capability_adapter to a LoRA adapter trained on capability data from the same BASE",
            )
        model = self.loaded.model
        layers = self._lora_layers()
        for _, module in layers:
            module.set_scale("default", 1.0)
        if recipe.merge == "linear":
            name = f"merge-{self.fingerprint(recipe)[-12:]}"
            if name not in model.peft_config:
                model.add_weighted_adapter(
                    ["default", "capability"], list(recipe.weights), name, combination_type="cat"
                )
            model.set_adapter(name)
            return
        weights = torch.tensor(recipe.weights)
        combine = {
            "ties": lambda deltas: merge_utils.ties(deltas, weights, recipe.density, "total"),
            "dare_linear": lambda deltas: merge_utils.dare_linear(deltas, weights, recipe.density),
            "dare_ties": lambda deltas: merge_utils.dare_ties(deltas, weights, recipe.density, "total"),
        }[recipe.merge]
        if self._base_weights is None:
            self._base_weights = {n: m.base_layer.weight.detach().clone() for n, m in layers}
        torch.manual_seed(recipe.seed)  # DARE drops at random
        with torch.no_grad():
            for name, module in layers:
                own = module.get_delta_weight("default")
                merged = combine([own, module.get_delta_weight("capability")])
                weight = module.base_layer.weight
                weight.copy_((self._base_weights[name] + merged.to(weight.device)).to(weight.dtype))
        model.base_model.disable_adapter_layers()
        self._weights_moved = True

    def _restore_base(self) -> None:
        """Undo a TIES/DARE merge: the LoRA'd modules' base weights back, the adapters on again."""
        import torch

        if not self._weights_moved:
            return
        with torch.no_grad():
            for name, module in self._lora_layers():
                module.base_layer.weight.copy_(self._base_weights[name])
        self.loaded.model.base_model.enable_adapter_layers()
        self._weights_moved = False

    def _trained_adapter(self, recipe: Recipe) -> None:
        """A LoRA adapter on BASE (trained by the frontier, or the unmitigated model): loaded beside
        ALIGNED's once, then made the active one."""
        if not self.lora:
            field = {
                "retrain": "retrain.steps",
                "multi-objective": "multi_objective.lambdas",
                "unmitigated": "recovery.unmitigated",
            }.get(recipe.family, "replay.fractions")
            raise ConfigError(
                f"{recipe.family} candidates need ALIGNED to be a LoRA adapter (they are adapters on BASE too)",
                where=field,
                hint=f"pass the aligned adapter directory as ALIGNED, or leave {field} empty",
            )
        model = self.loaded.model
        name = "trained-" + hashlib.sha256(str(recipe.adapter).encode()).hexdigest()[:12]
        if name not in model.peft_config:
            model.load_adapter(str(recipe.adapter), adapter_name=name)
        model.set_adapter(name)

    # --------------------------------------------------------------------- engines

    def engine(self, name: str, recipe: Recipe, tracer: Tracer | None = None):
        """An engine for ``recipe``: its fingerprint is known now, its weights are set on first use."""
        return CandidateEngine(self, name, recipe, tracer or NULL_TRACER)


def _count_layers(model) -> int:
    found = {int(m.group(1)) for n, _ in model.named_parameters() if (m := _LAYER.search(f".{n}."))}
    if not found:
        raise ModelLoadError(
            "no decoder layers found (no '.layers.N.' parameters)", hint="a decoder-only LM is needed"
        )
    return max(found) + 1


class CandidateEngine:
    """``EngineLike`` over the builder's working model for one recipe. ``name``, ``fingerprint`` and
    ``render`` need no weights; ``generate`` and ``score`` set the recipe's weights first."""

    def __init__(self, builder: CandidateBuilder, name: str, recipe: Recipe, tracer: Tracer):
        from dataclasses import replace

        from tether.engine.engine import Engine

        self.builder = builder
        self.recipe = recipe
        loaded = replace(builder.loaded, name=name, spec=name, fingerprint=builder.fingerprint(recipe))
        self._engine = Engine(loaded, builder.config, tracer)
        self.builds = 0

    @property
    def name(self) -> str:
        return self._engine.name

    @property
    def fingerprint(self) -> str:
        return self._engine.fingerprint

    @property
    def has_chat_template(self) -> bool:
        return self._engine.has_chat_template

    @property
    def model(self):
        return self._engine.model

    @property
    def tokenizer(self):
        return self._engine.tokenizer

    def render(self, prompt):
        return self._engine.render(prompt)

    def _ready(self) -> None:
        if self.builder._active != self.fingerprint:
            self.builds += 1
        self.builder.activate(self.recipe)

    def generate(self, prompts, params=None, **kwargs):
        self._ready()
        return self._engine.generate(prompts, params, **kwargs)

    def score(self, requests, **kwargs):
        self._ready()
        return self._engine.score(requests, **kwargs)


__all__ = [
    "MERGE_METHODS",
    "CandidateBuilder",
    "CandidateEngine",
    "Recipe",
    "block_bounds",
    "check_same_base",
    "layer_alphas",
]
