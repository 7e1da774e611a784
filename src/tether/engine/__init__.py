"""The one engine: batched generation and log-likelihood scoring for every stage, the ``EngineLike``
protocol every stage types its engine with, and the ``EnginePool`` pipelines load models through.

``Engine`` is imported lazily so that the typed records (``tether.engine.types``) and everything
that only needs them stay importable without loading torch.
"""

from tether.engine.pool import EngineLoader, EnginePool
from tether.engine.protocol import EngineLike
from tether.engine.types import Completion, Prompt, SamplingParams, ScoreRequest, ScoreResult

__all__ = [
    "Completion",
    "Engine",
    "EngineLike",
    "EngineLoader",
    "EnginePool",
    "Prompt",
    "PromptTooLongError",
    "SamplingParams",
    "ScoreRequest",
    "ScoreResult",
]


def __getattr__(name: str):
    if name in ("Engine", "PromptTooLongError"):
        from tether.engine import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'tether.engine' has no attribute {name!r}")
