"""Typed records that flow in and out of the engine."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Prompt(BaseModel):
    """One generation request. ``text`` is the user message; with ``chat=True`` it is wrapped in the
    model's chat template (with ``system`` if given), otherwise fed raw.

    A multi-turn conversation passes its earlier turns as the extra field ``history``: a list of
    ``{"role": "user"|"assistant", "content": ...}`` messages placed before ``text`` (see
    :func:`prompt_history`); red teaming's multi-turn attacks use it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    text: str
    system: str | None = None
    chat: bool = True


def prompt_history(prompt: Prompt) -> list[dict[str, str]]:
    """The earlier turns of a multi-turn prompt (its ``history`` extra), checked: [] when none."""
    history = getattr(prompt, "history", None) or []
    out = []
    for turn in history:
        role, content = turn.get("role"), turn.get("content")
        if role not in ("user", "assistant") or not isinstance(content, str):
            raise ValueError(
                f"prompt {prompt.id!r}: a history turn needs role user/assistant and text content"
            )
        out.append({"role": role, "content": content})
    return out


class SamplingParams(BaseModel):
    """How to decode. ``temperature=0`` means greedy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(128, ge=1, description="Tokens to generate at most per sample.")
    temperature: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="0 = greedy; >0 samples.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False, description="Nucleus sampling mass.")
    n: int = Field(1, ge=1, description="Samples per prompt.")
    seed: int = Field(0, description="Seed for sampling; the same seed gives the same samples.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a completion (not included).")


class Completion(BaseModel):
    """One sample for one prompt."""

    model_config = ConfigDict(frozen=True)

    prompt_id: str
    sample_index: int = 0
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or stop string), "length", or "error"
    # Seconds this sample's prompt took: in Tether's decode loop, from its admission to its finish;
    # where prompts share each forward (transformers' batch generate), the batch's time / its prompts;
    # for a served model, its request's round trip.
    latency_s: float
    truncated_prompt: bool = False
    # Token ids for callers that train on the sample (PPO): what the model saw and what it wrote (EOS
    # not included; a stop string cuts ``text``, not these). In memory only: never written to JSONL records or traces.
    prompt_token_ids: list[int] | None = Field(None, exclude=True, repr=False)
    token_ids: list[int] | None = Field(None, exclude=True, repr=False)


class ScoreRequest(BaseModel):
    """Log-likelihood of each continuation given a shared context (multiple choice, or one pair)."""

    model_config = ConfigDict(frozen=True)

    id: str
    context: str
    continuations: list[str] = Field(min_length=1)


class ScoreResult(BaseModel):
    """Per-continuation sum of token log-probs and token counts (for length normalisation)."""

    model_config = ConfigDict(frozen=True)

    id: str
    logprobs: list[float]
    num_tokens: list[int]
    num_chars: list[int]
    is_greedy: list[bool]

    @property
    def best(self) -> int:
        return max(range(len(self.logprobs)), key=lambda i: self.logprobs[i])

    @property
    def best_normalized(self) -> int:
        """Choice with the highest log-likelihood per character of the continuation string as given
        (leading space included). lm-eval's acc_norm divides by the bare choice text instead: use
        ``tether.evals.formats.predict(result, request, normalized=True)`` for that convention."""
        return max(range(len(self.logprobs)), key=lambda i: self.logprobs[i] / max(self.num_chars[i], 1))
