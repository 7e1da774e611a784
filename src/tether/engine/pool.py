"""``EnginePool``: the one way pipelines load, share and free models.

A pipeline asks the pool for a model spec whenever a stage needs it; the pool loads it once and
hands the same engine to every later stage, and frees the others first when it must (on a laptop
two 135M models fit comfortably, five do not). Before training, which loads its own trainable copy,
``clear()`` frees everything. Tests pass ``loader`` to hand out scripted engines.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from tether.config import EngineConfig
from tether.engine.protocol import EngineLike
from tether.runs import NULL_TRACER, Tracer

EngineLoader = Callable[[str, EngineConfig, Tracer], EngineLike]


def load_engine(spec: str, config: EngineConfig, tracer: Tracer) -> EngineLike:
    """The default loader: a served model (``openai:NAME``, or any spec with
    ``engine.backend=openai``) as an ``OpenAIEngine``, else ``Engine.from_spec`` (imports torch
    only when first called)."""
    from tether.engine.served import OpenAIEngine, is_served

    if is_served(spec, config.backend):
        return OpenAIEngine(spec, config.served, tracer=tracer)
    from tether.engine.engine import Engine

    return Engine.from_spec(spec, config, tracer=tracer)


def pool_key(spec: str, overrides: dict | None = None) -> str:
    """The pool's name for ``spec`` loaded with engine ``overrides``."""
    if not overrides:
        return spec
    return spec + "".join(f" {name}={value}" for name, value in sorted(overrides.items()))


class EnginePool:
    """Loaded engines by model spec, all with one engine config and tracer."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        tracer: Tracer | None = None,
        loader: EngineLoader | None = None,
    ):
        self.config = config or EngineConfig()
        self.tracer = tracer or NULL_TRACER
        self.loader = loader or load_engine
        self._engines: dict[str, EngineLike] = {}

    def get(self, spec: str, keep: tuple[str, ...] = (), overrides: dict | None = None) -> EngineLike:
        """The engine of ``spec``, loading it if needed; loading frees every other engine except
        those in ``keep`` (so a policy and its critic can be held together). ``overrides`` are
        engine settings for this model only (a red-team attacker in bfloat16): it is then another
        engine than ``spec``'s own, kept under the key :func:`pool_key` gives."""
        key = pool_key(spec, overrides)
        if key not in self._engines:
            for old in [s for s in self._engines if s not in keep]:
                del self._engines[old]
            gc.collect()
            config = self.config.model_copy(update=overrides) if overrides else self.config
            self._engines[key] = self.loader(spec, config, self.tracer)
        return self._engines[key]

    def put(self, spec: str, engine: EngineLike) -> None:
        """Share an engine loaded elsewhere (e.g. the demo's, with the audit)."""
        self._engines[spec] = engine

    def loaded(self) -> list[str]:
        return list(self._engines)

    def clear(self) -> None:
        """Free every engine (before training loads its own copy of a model)."""
        self._engines.clear()
        gc.collect()

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc) -> None:
        self.clear()
