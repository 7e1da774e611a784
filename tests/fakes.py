"""Test doubles shared by every test: one scripted engine, one scripted text scorer.

``ScriptedEngine`` implements ``tether.engine.protocol.EngineLike`` (generation *and* log-likelihood
scoring), in the spirit of inspect_ai's ``mockllm``: the test says what the model answers, the engine
records what it was asked. It stands in wherever production code takes an engine, a critic, a
feedback model or an LLM judge's scorer::

    from fakes import ScriptedEngine

    engine = ScriptedEngine("I'm sorry, but I can't help with that.")      # one answer for all
    engine = ScriptedEngine({"h1": "Sure, ...", "h1#c0": "It complies."})  # by prompt id
    engine = ScriptedEngine(lambda prompt, k: f"sample {k} for {prompt.text}")
    engine = ScriptedEngine(score=lambda request: [-0.5, -2.0])  # log-probs, one per continuation

    run_something(engine)
    assert [c.stage for c in engine.calls] == ["cai/answer", "cai/check"]
    assert [p.id for p in engine.generated] == ["h1"]

* An answer (the constant, a dict value, or what the function returns) that is an exception is
  raised instead: ``ScriptedEngine({"a": "ok", "b": RuntimeError("out of memory")})`` fails every
  batch holding ``b``. ``fail_on_call={3: KeyboardInterrupt()}`` crashes the third call (generate
  and score calls counted together, from 1), whatever it asks.
* A dict answers only the ids it has: any other prompt is a test bug and raises ``KeyError``.
* ``score(request)`` returns the log-probs (a full ``ScoreResult`` also works), ``None`` to leave the
  request out of the results (a broken scorer), or raises. By default every request prefers its
  first continuation (log-probs 0, -1, -2, ...).
* ``has_chat_template=False`` makes a base model: ``render`` leaves its prompts as plain text. With a
  template, ``render`` wraps chat prompts as ``<chat>…</chat>`` so a test can see the wrapping;
  ``render=`` replaces it.

``ScriptedScorer`` stands in for a text classifier such as ``tether.judges.ToxicityScorer``
(``score(texts)`` → one probability per text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal

from tether.engine.types import Completion, Prompt, SamplingParams, ScoreRequest, ScoreResult, prompt_history

Answer = str | BaseException
Reply = Answer | Mapping[str, Answer] | Callable[[Prompt, int], Answer]
Scores = Sequence[float] | ScoreResult | BaseException | None


@dataclass(frozen=True)
class Call:
    """One ``generate`` or ``score`` call as the engine received it (``params`` for generate only)."""

    kind: Literal["generate", "score"]
    stage: str
    items: tuple[Prompt, ...] | tuple[ScoreRequest, ...]
    params: SamplingParams | None = None

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]


def prefer_first(request: ScoreRequest) -> list[float]:
    """Log-probs 0, -1, -2, ...: the first continuation is the likeliest."""
    return [-float(i) for i in range(len(request.continuations))]


class ScriptedEngine:
    """An ``EngineLike`` whose answers and scores are scripted; see the module docstring.

    ``reply`` is a constant answer (by default the empty string), a dict by prompt id, or
    ``reply(prompt, sample_index)``; ``score(request)`` gives a request's log-probs. Every call is
    kept in ``calls``; ``generated`` and ``scored`` list what was asked, ``sent(id)`` finds a prompt."""

    def __init__(
        self,
        reply: Reply = "",
        *,
        score: Callable[[ScoreRequest], Scores] | BaseException = prefer_first,
        name: str = "fake",
        fingerprint: str | None = None,
        has_chat_template: bool = True,
        render: Callable[[Prompt], str] | None = None,
        fail_on_call: Mapping[int, BaseException] | None = None,
    ):
        self.reply, self.score_fn, self.render_fn = reply, score, render
        self.name = name
        self.fingerprint = fingerprint if fingerprint is not None else f"fp-{name}"
        self.has_chat_template = has_chat_template
        self.fail_on_call = dict(fail_on_call or {})
        self.calls: list[Call] = []

    # --- EngineLike -------------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        if self.render_fn is not None:
            return self.render_fn(prompt)
        if not (prompt.chat and self.has_chat_template):
            return prompt.text
        system = f"<system>{prompt.system}</system>" if prompt.system else ""
        history = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in prompt_history(prompt))
        return f"<chat>{system}{history}{prompt.text}</chat>"

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | None = None,
        *,
        stage: str = "",
        progress: bool = True,
    ) -> list[Completion]:
        params = params or SamplingParams()
        self._record(Call("generate", stage, tuple(prompts), params))
        return [
            Completion(
                prompt_id=p.id,
                sample_index=k,
                text=_raise_or_return(self._answer(p, k)),
                prompt_tokens=1,
                completion_tokens=1,
                finish_reason="stop",
                latency_s=0.0,
            )
            for p in prompts
            for k in range(params.n)
        ]

    def score(
        self, requests: Sequence[ScoreRequest], *, stage: str = "", progress: bool = True
    ) -> list[ScoreResult]:
        self._record(Call("score", stage, tuple(requests)))
        results = []
        for r in requests:
            scores = self.score_fn if isinstance(self.score_fn, BaseException) else self.score_fn(r)
            if scores is None:
                continue
            results.append(
                scores if isinstance(scores, ScoreResult) else _result(r, _raise_or_return(scores))
            )
        return results

    # --- what the test asks afterwards ------------------------------------------------------------

    @property
    def generate_calls(self) -> list[Call]:
        return [c for c in self.calls if c.kind == "generate"]

    @property
    def score_calls(self) -> list[Call]:
        return [c for c in self.calls if c.kind == "score"]

    @property
    def generated(self) -> list[Prompt]:
        """Every prompt sent to ``generate``, in order."""
        return [p for c in self.generate_calls for p in c.items]

    @property
    def scored(self) -> list[ScoreRequest]:
        """Every request sent to ``score``, in order."""
        return [r for c in self.score_calls for r in c.items]

    def sent(self, prompt_id: str) -> tuple[Prompt, SamplingParams]:
        """The last prompt generated with this id, and the sampling params it was sent with."""
        for call in reversed(self.generate_calls):
            for p in call.items:
                if p.id == prompt_id:
                    return p, call.params
        raise KeyError(f"no prompt {prompt_id!r} was generated")

    # TEMPORARY shim: ``tether.cai.loop.resolve_style`` still reads ``critic.loaded.has_chat_template``
    # (``Engine.loaded`` is the loaded model). Remove once it reads the protocol's ``has_chat_template``.
    @property
    def loaded(self) -> SimpleNamespace:
        return SimpleNamespace(has_chat_template=self.has_chat_template)

    # --- internals --------------------------------------------------------------------------------

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        error = self.fail_on_call.get(len(self.calls))
        if error is not None:
            raise error

    def _answer(self, prompt: Prompt, k: int) -> Answer:
        if isinstance(self.reply, str | BaseException):
            return self.reply
        if isinstance(self.reply, Mapping):
            if prompt.id not in self.reply:
                raise KeyError(f"the script has no answer for prompt id {prompt.id!r}")
            return self.reply[prompt.id]
        return self.reply(prompt, k)


def _raise_or_return(value):
    if isinstance(value, BaseException):
        raise value
    return value


def _result(request: ScoreRequest, logprobs: Sequence[float]) -> ScoreResult:
    n = len(request.continuations)
    if len(logprobs) != n:
        raise ValueError(f"scripted {len(logprobs)} log-probs for {n} continuations of {request.id!r}")
    best = max(range(n), key=lambda i: logprobs[i])
    return ScoreResult(
        id=request.id,
        logprobs=list(logprobs),
        num_tokens=[1] * n,
        num_chars=[len(c) for c in request.continuations],
        is_greedy=[i == best for i in range(n)],
    )


class ScriptedScorer:
    """A text classifier (the interface of ``tether.judges.ToxicityScorer``): ``probability`` is a
    dict by text or a function of the text. Every text asked about is kept in ``texts``."""

    name = "scripted"

    def __init__(self, probability: Mapping[str, float] | Callable[[str], float]):
        self.probability = probability
        self.texts: list[str] = []

    def score(self, texts: Sequence[str]) -> list[float]:
        self.texts += texts
        if isinstance(self.probability, Mapping):
            return [self.probability[t] for t in texts]
        return [self.probability(t) for t in texts]
