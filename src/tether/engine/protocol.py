"""``EngineLike``: what every stage, task, judge and trainer may ask of a model.

``tether.engine.Engine`` implements it over a loaded model; ``tests/fakes.py`` implements it with
scripted answers; a served model (an OpenAI-compatible endpoint) would implement it over HTTP. Code
that takes an engine is typed with this protocol and uses nothing else, so none of it needs to know
which of these it holds. Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tether.engine.types import Completion, Prompt, SamplingParams, ScoreRequest, ScoreResult


@runtime_checkable
class EngineLike(Protocol):
    """Batched generation and log-likelihood scoring over one model.

    ``name`` is how reports call the model; ``fingerprint`` changes whenever its weights do (the
    audit cache keys on it). ``render`` is the exact text the model sees for a prompt, and
    ``has_chat_template`` says whether ``Prompt(chat=True)`` is wrapped in one (a base model's is not).
    Completions carry their prompt's and their own token ids (``Completion.token_ids``) for callers
    that train on them, such as PPO."""

    @property
    def name(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def has_chat_template(self) -> bool: ...

    def render(self, prompt: Prompt) -> str: ...

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | None = None,
        *,
        stage: str = "",
        progress: bool = True,
    ) -> list[Completion]: ...

    def score(
        self, requests: Sequence[ScoreRequest], *, stage: str = "", progress: bool = True
    ) -> list[ScoreResult]: ...
