"""The one engine: batched generation and log-likelihood scoring for every stage.

``Engine`` is imported lazily so that the typed records (``tether.engine.types``) and everything
that only needs them stay importable without loading torch.
"""

from tether.engine.types import Completion, Prompt, SamplingParams, ScoreRequest, ScoreResult

__all__ = [
    "Completion",
    "Engine",
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
