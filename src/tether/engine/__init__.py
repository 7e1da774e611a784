"""The one engine: batched generation and log-likelihood scoring for every stage."""

from tether.engine.engine import Engine, PromptTooLongError
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
