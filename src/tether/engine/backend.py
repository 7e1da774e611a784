"""The backend interface: what a generation/scoring engine must provide.

The transformers backend (``HFBackend``) implements it for CPU and GPU. A vLLM backend is the
planned GPU extra; it plugs in here, taking token ids and returning token ids, so the Engine's
chat templating, truncation, stop strings, records and traces stay the same for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from tether.engine.types import SamplingParams


@dataclass(frozen=True)
class EncodedScore:
    """A score request after tokenisation: shared context ids and one id list per continuation."""

    context_ids: list[int]
    continuation_ids: list[list[int]]


@dataclass(frozen=True)
class TokenScores:
    logprobs: list[float]
    is_greedy: list[bool]


@dataclass(frozen=True)
class EchoScores:
    """Per-token log-probs of one whole sequence (what an OpenAI ``echo`` with ``logprobs`` needs):
    ``logprobs[i]`` is token ``i+1``'s given the tokens before it (the first token has none);
    ``greedy_ids[i]``/``greedy_logprobs[i]`` are the likeliest token at that position and its
    log-prob, with one more entry for the position after the last token (the greedy next token)."""

    logprobs: list[float]
    greedy_ids: list[int]
    greedy_logprobs: list[float]


@dataclass(frozen=True)
class Sample:
    token_ids: list[int]
    hit_eos: bool


class Backend(Protocol):
    def generate(
        self, prompts: list[list[int]], params: SamplingParams, batch_index: int
    ) -> list[list[Sample]]:
        """One list of ``params.n`` samples per prompt (prompts come as one batch)."""
        ...

    def decode(
        self, prompts: list[list[int]], params: SamplingParams, slots: int, keys: list[int] | None = None
    ) -> Iterator[tuple[int, list[Sample], float]]:
        """Continuous batching: ``(prompt index, its params.n samples, latency)`` as prompts finish,
        ``slots`` sequences in flight. Used when ``decode_loop_fits`` says so."""
        ...

    def decode_loop_fits(self, tokens: int) -> bool:
        """Whether :meth:`decode` can run sequences of ``tokens`` tokens."""
        ...

    def decode_order(self, prompts: list[list[int]], params: SamplingParams) -> list[int]:
        """The order in which :meth:`decode` runs ``prompts`` fastest (indices into ``prompts``)."""
        ...

    def score(self, requests: list[EncodedScore]) -> list[TokenScores]:
        """Summed continuation log-probs for a batch of requests."""
        ...

    def echo(self, sequences: list[list[int]]) -> list[EchoScores]:
        """Per-token log-probs of each whole sequence (``tether serve``'s echo)."""
        ...
