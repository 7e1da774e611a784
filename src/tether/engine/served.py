"""``OpenAIEngine``: a model behind an OpenAI-compatible endpoint, as an ``EngineLike``.

A spec ``openai:NAME`` (or any spec with ``engine.backend=openai``) is the model NAME served at
``engine.served.base_url`` (else ``$OPENAI_BASE_URL``): vLLM, llama.cpp, a hosted API, or
``tether serve``. Generation goes through ``/chat/completions`` (chat prompts) or ``/completions``
(raw prompts); multiple-choice scoring through ``/completions`` with ``echo`` and ``logprobs``, the
way lm-eval's ``local-completions`` does it. A server without prompt log-probabilities (chat-only
APIs) raises :class:`~tether.errors.ScoringUnsupportedError`, so those tasks come out unscored with
that message, never as zeros.

A request that times out, cannot connect or gets 429/5xx is retried with exponential backoff; one
that still fails raises :class:`~tether.errors.EndpointError` naming the URL. A raised batch leaves
its items "error" in the audit (never cached, never a refusal), so a rerun asks only for those:
answers already received are remembered for the engine's lifetime, and finished batches are in the
audit cache under the engine's fingerprint (base URL, model and the server's model metadata).

The API key is read from the environment variable ``engine.served.api_key_env`` names and kept in
memory only: configs, manifests and traces hold the variable's name, never its value.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import httpx

from tether.config import ServedConfig
from tether.engine.types import Completion, Prompt, SamplingParams, ScoreRequest, ScoreResult, prompt_history
from tether.errors import ConfigError, DataError, EndpointError, ScoringUnsupportedError
from tether.models.spec import SERVED_PREFIX
from tether.progress import progress_bar
from tether.runs import NULL_TRACER, Tracer

BASE_URL_ENV = "OPENAI_BASE_URL"
# Statuses worth another try: rate limits and server-side failures, which a flaky endpoint recovers from.
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Model metadata that changes on every server start (vLLM stamps `created` per request): not identity.
_VOLATILE_META = frozenset({"created"})
_REMEMBERED = 2048


def is_served(spec: str, backend: str = "hf") -> bool:
    """Whether ``spec`` names a served model rather than local weights."""
    return spec.startswith(SERVED_PREFIX) or backend == "openai"


def served_model_name(spec: str) -> str:
    return spec.removeprefix(SERVED_PREFIX)


def resolve_base_url(config: ServedConfig) -> str:
    """The endpoint root: ``engine.served.base_url``, else ``$OPENAI_BASE_URL``; ConfigError naming
    both when neither is set."""
    url = config.base_url or os.environ.get(BASE_URL_ENV)
    if not url:
        raise ConfigError(
            "a served model needs an endpoint, and none is set",
            where="engine.served.base_url",
            hint=f"pass --set engine.served.base_url=http://HOST:PORT/v1, or export {BASE_URL_ENV}",
        )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"'{url}' is not an http(s) URL",
            where="engine.served.base_url",
            hint="e.g. http://localhost:8000/v1",
        )
    return url.rstrip("/")


def resolve_api_key(config: ServedConfig) -> str | None:
    """The key from the environment variable ``api_key_env`` names; ConfigError naming the variable
    when it is unset or empty."""
    if not config.api_key_env:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ConfigError(
            f"the environment variable {config.api_key_env} is not set",
            where=f"${config.api_key_env} (engine.served.api_key_env)",
            hint=f"export {config.api_key_env}=<the API key>, or unset engine.served.api_key_env for no key",
        )
    return key


def check_served(spec: str, config: ServedConfig) -> None:
    """What can be checked without a request: a model name, an endpoint and the key's variable."""
    if not served_model_name(spec).strip():
        raise ConfigError(f"'{spec}' names no model", where="MODELS", hint="e.g. openai:my-model")
    resolve_base_url(config)
    resolve_api_key(config)


class OpenAIEngine:
    """Generation and log-likelihood scoring over HTTP; see the module docstring.

    ``client`` replaces the HTTP client (tests pass one over ``httpx.MockTransport``)."""

    def __init__(
        self,
        model: str,
        config: ServedConfig | None = None,
        *,
        tracer: Tracer | None = None,
        client: httpx.Client | None = None,
    ):
        self.config = config or ServedConfig()
        self.model = served_model_name(model)
        self.tracer = tracer or NULL_TRACER
        self.base_url = resolve_base_url(self.config)
        key = resolve_api_key(self.config)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = client or httpx.Client(timeout=self.config.timeout_s)
        # Recent answers by request body: a batch that failed part-way is retried prompt by prompt
        # (``generate_isolated``) without asking again for what already came back.
        self._answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._answers_lock = threading.Lock()
        self._scoring_refused: str | None = None
        self._fingerprint = self._identify()

    # --- identity ---------------------------------------------------------------------------------

    def _identify(self) -> str:
        """The fingerprint: base URL, model and the server's metadata for it (``/models``), so a
        different model behind the same name, or another server, misses the audit cache."""
        listing = self._request("GET", "/models", None)
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise EndpointError(
                "the model list is not an OpenAI-style {'data': [...]} object",
                where=f"{self.base_url}/models",
                hint="check that engine.served.base_url is the API root (it usually ends in /v1)",
            )
        entry = next((m for m in data if isinstance(m, dict) and m.get("id") == self.model), None)
        if entry is None:
            served = ", ".join(str(m.get("id")) for m in data if isinstance(m, dict)) or "none"
            raise EndpointError(
                f"model '{self.model}' is not served here (it serves: {served})",
                where=f"{self.base_url}/models",
                hint="pass one of those names as openai:NAME",
            )
        meta = {k: v for k, v in entry.items() if k not in _VOLATILE_META}
        blob = json.dumps({"base_url": self.base_url, "model": self.model, "meta": meta}, sort_keys=True)
        return "served-" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return self.model

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def has_chat_template(self) -> bool:
        return self.config.mode != "completions"

    def render(self, prompt: Prompt) -> str:
        """What is sent, as readable text (the server applies its own chat template)."""
        if not self._uses_chat(prompt):
            return prompt.text
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in _messages(prompt))

    def _uses_chat(self, prompt: Prompt) -> bool:
        return self.config.mode == "chat" or (self.config.mode == "auto" and prompt.chat)

    # --- HTTP ------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None, *, scoring: bool = False):
        """One call with retries. Raises EndpointError (ScoringUnsupportedError for a 4xx on a scoring
        call) naming the URL; never returns an error body."""
        url = self.base_url + path
        last = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                wait = self.config.backoff_s * 2 ** (attempt - 1)
                time.sleep(wait * (0.5 + random.random()))
            try:
                response = self._client.request(
                    method, url, json=body, headers=self._headers, timeout=self.config.timeout_s
                )
            except httpx.TimeoutException:
                last = f"no answer within {self.config.timeout_s:g} s"
                continue
            except httpx.TransportError as exc:
                last = f"cannot connect ({type(exc).__name__}: {exc})"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}: {_error_message(response)}"
                continue
            if response.status_code in (401, 403):
                variable = self.config.api_key_env
                raise EndpointError(
                    f"the endpoint refused the request (HTTP {response.status_code}: {_error_message(response)})",
                    where=url,
                    hint=f"check the key in ${variable}"
                    if variable
                    else "set engine.served.api_key_env to the NAME of the variable holding the key",
                )
            if response.status_code >= 400:
                error = ScoringUnsupportedError if scoring else EndpointError
                raise error(f"HTTP {response.status_code}: {_error_message(response)}", where=url)
            try:
                return response.json()
            except ValueError:
                raise EndpointError(
                    f"the answer is not JSON (it starts {response.text[:60]!r})",
                    where=url,
                    hint="check that engine.served.base_url is an OpenAI-compatible API root",
                ) from None
        raise EndpointError(
            f"no answer after {self.config.max_retries + 1} tries (last: {last})",
            where=url,
            hint="is the server up? raise engine.served.max_retries or engine.served.timeout_s for a slow one",
        )

    def _post(self, path: str, body: dict[str, Any], *, scoring: bool = False) -> dict[str, Any]:
        key = path + json.dumps(body, sort_keys=True)
        with self._answers_lock:
            if key in self._answers:
                return self._answers[key]
        answer = self._request("POST", path, body, scoring=scoring)
        if (
            not isinstance(answer, dict)
            or not isinstance(answer.get("choices"), list)
            or not answer["choices"]
        ):
            raise EndpointError("the answer has no 'choices'", where=self.base_url + path)
        with self._answers_lock:
            self._answers[key] = answer
            while len(self._answers) > _REMEMBERED:
                self._answers.popitem(last=False)
        return answer

    def _map(self, fn: Callable[[Any], Any], jobs: Sequence[Any], label: str, progress: bool) -> list[Any]:
        """``fn`` over ``jobs``, ``concurrency`` at once, in order. Every job runs even when one
        fails (its answer is remembered for the retry); then the first failure is raised."""
        results: list[Any] = [None] * len(jobs)
        failures: list[BaseException] = []
        with (
            progress_bar(label, total=len(jobs), enabled=progress) as bar,
            ThreadPoolExecutor(max_workers=min(self.config.concurrency, max(1, len(jobs)))) as pool,
        ):
            # Each job runs in a copy of the caller's context, so its span is a child of the caller's.
            futures = [pool.submit(contextvars.copy_context().run, fn, job) for job in jobs]
            for i, future in enumerate(futures):
                try:
                    results[i] = future.result()
                except Exception as exc:
                    failures.append(exc)
                bar.advance(1)
        if failures:
            raise failures[0]
        return results

    # --- generation -------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | None = None,
        *,
        stage: str = "",
        progress: bool = True,
    ) -> list[Completion]:
        params = params or SamplingParams()
        per_prompt = self._map(
            lambda p: self._generate_one(p, params, stage),
            list(prompts),
            f"generate {stage}".strip(),
            progress,
        )
        return [c for completions in per_prompt for c in completions]

    def _generate_one(self, prompt: Prompt, params: SamplingParams, stage: str) -> list[Completion]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": params.n,
            "seed": params.seed,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        chat = self._uses_chat(prompt)
        if chat:
            body["messages"] = _messages(prompt)
        else:
            body["prompt"] = prompt.text
        path = "/chat/completions" if chat else "/completions"
        operation = "chat" if chat else "text_completion"
        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": self.model,
            "tether.item.id": prompt.id,
            "tether.stage": stage,
            "tether.latency.kind": "request",
        }
        with self.tracer.span(f"{operation} {self.model}", attributes, client=True) as call:
            began = time.perf_counter()
            answer = self._post(path, body)
            latency = time.perf_counter() - began
            usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
            if call is not None:
                call.set_attribute("gen_ai.usage.input_tokens", int(usage.get("prompt_tokens") or 0))
                call.set_attribute("gen_ai.usage.output_tokens", int(usage.get("completion_tokens") or 0))
                if isinstance(answer.get("id"), str):
                    call.set_attribute("gen_ai.response.id", answer["id"])
        choices = sorted(answer["choices"], key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
        if len(choices) != params.n:
            raise EndpointError(
                f"asked for {params.n} choices, got {len(choices)}", where=self.base_url + path
            )
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        # Usage counts all n choices together; each choice gets its share (exact for n=1).
        completion_tokens = int(usage.get("completion_tokens") or 0) // params.n
        out = []
        for k, choice in enumerate(choices):
            text = _choice_text(choice, chat)
            if text is None:
                raise EndpointError("a choice has no text", where=self.base_url + path)
            finish = "length" if choice.get("finish_reason") == "length" else "stop"
            out.append(
                Completion(
                    prompt_id=prompt.id,
                    sample_index=k,
                    text=text,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    finish_reason=finish,
                    latency_s=round(latency, 4),
                )
            )
            self.tracer.record(
                kind="generate",
                stage=stage,
                model=self.name,
                prompt_id=prompt.id,
                prompt=prompt.text,
                output=text,
                sample_index=k,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                finish_reason=finish,
                latency_s=round(latency, 4),
                temperature=params.temperature,
            )
        return out

    # --- scoring ----------------------------------------------------------------------------------

    def score(
        self, requests: Sequence[ScoreRequest], *, stage: str = "", progress: bool = True
    ) -> list[ScoreResult]:
        """Each request is one ``/completions`` call with ``echo``, ``logprobs`` and ``max_tokens: 1``
        (lm-eval's ``local-completions`` request) over its context alone and context + each
        continuation: the context's own token count marks where each continuation's tokens begin,
        as ``Engine.encode_score`` splits them."""
        if self._scoring_refused:
            raise ScoringUnsupportedError(self._scoring_refused, where=f"{self.base_url}/completions")
        return self._map(
            lambda r: self._score_one(r, stage), list(requests), f"score {stage}".strip(), progress
        )

    def _score_one(self, request: ScoreRequest, stage: str) -> ScoreResult:
        context = request.context.rstrip(" ")
        if not context:
            raise DataError(
                "an empty context cannot be scored through a served model (no token predicts the first)",
                where=f"item {request.id}",
            )
        moved = request.context[len(context) :]
        texts = [context] + [context + moved + c for c in request.continuations]
        body = {
            "model": self.model,
            "prompt": texts,
            "max_tokens": 1,
            "temperature": 0,
            "echo": True,
            "logprobs": 1,
        }
        url = f"{self.base_url}/completions"
        attributes = {
            "gen_ai.operation.name": "score",
            "gen_ai.request.model": self.model,
            "tether.item.id": request.id,
            "tether.stage": stage,
            "tether.latency.kind": "request",
        }
        with self.tracer.span(f"score {self.model}", attributes, client=True):
            return self._score_request(request, body, texts, url, stage)

    def _score_request(self, request: ScoreRequest, body, texts, url: str, stage: str) -> ScoreResult:
        began = time.perf_counter()
        try:
            answer = self._post("/completions", body, scoring=True)
            echoes = [_echo_tokens(choice) for choice in _by_index(answer, len(texts))]
        except ScoringUnsupportedError as exc:
            self._refuse_scoring(exc.message)
        except _NoLogprobs as exc:
            self._refuse_scoring(str(exc))
        latency = time.perf_counter() - began
        n_context = len(echoes[0][0])
        logprobs, greedy, counts = [], [], []
        for (lps, tops), cont in zip(echoes[1:], request.continuations, strict=True):
            part, part_tops = lps[n_context:], tops[n_context:]
            if not part or any(lp is None for lp in part):
                raise EndpointError(
                    f"the continuation {cont!r} has no scored tokens after the context's {n_context}",
                    where=url,
                )
            logprobs.append(float(sum(part)))
            greedy.append(
                all(
                    top is not None and lp >= max(top) - 1e-9 for lp, top in zip(part, part_tops, strict=True)
                )
            )
            counts.append(len(part))
        self.tracer.record(
            kind="score",
            stage=stage,
            model=self.name,
            item_id=request.id,
            context_tokens=n_context,
            logprobs=logprobs,
            latency_s=round(latency, 5),
        )
        return ScoreResult(
            id=request.id,
            logprobs=logprobs,
            num_tokens=counts,
            num_chars=[len(c) for c in request.continuations],
            is_greedy=greedy,
        )

    def _refuse_scoring(self, reason: str) -> NoReturn:
        self._scoring_refused = (
            f"model '{self.model}' offers no prompt log-probabilities (/completions with echo and "
            f"logprobs: {reason}); log-likelihood tasks are unsupported for it"
        )
        raise ScoringUnsupportedError(self._scoring_refused, where=f"{self.base_url}/completions")


class _NoLogprobs(Exception):
    """A completions answer without the echoed prompt's log-probabilities."""


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    return [*messages, *prompt_history(prompt), {"role": "user", "content": prompt.text}]


def _choice_text(choice: Any, chat: bool) -> str | None:
    if not isinstance(choice, dict):
        return None
    if chat:
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ("" if message and content is None else None)
    text = choice.get("text")
    return text if isinstance(text, str) else None


def _by_index(answer: dict[str, Any], n: int) -> list[dict[str, Any]]:
    choices = [c for c in answer["choices"] if isinstance(c, dict)]
    if len(choices) != n:
        raise _NoLogprobs(f"{n} prompts were sent and {len(choices)} choices came back")
    return sorted(choices, key=lambda c: c.get("index", 0))


def _echo_tokens(choice: dict[str, Any]) -> tuple[list[float | None], list[list[float] | None]]:
    """The prompt's tokens' log-probs and top log-probs from an echoed ``max_tokens: 1`` choice:
    every token but the last, the generated one (lm-eval's reading, which servers that work with
    lm-eval's ``local-completions`` keep to)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("token_logprobs"), list):
        raise _NoLogprobs("the answer carries no token_logprobs")
    lps = logprobs["token_logprobs"]
    tops_raw = logprobs.get("top_logprobs") or [None] * len(lps)
    n = len(lps) - 1
    if n <= 0:
        raise _NoLogprobs("the prompt was not echoed")
    tops = [list(t.values()) if isinstance(t, dict) and t else None for t in tops_raw[:n]]
    return [None if lp is None else float(lp) for lp in lps[:n]], tops


def _error_message(response: httpx.Response) -> str:
    """An OpenAI-style error's message, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:200]
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])[:200]
    return json.dumps(body)[:200]


__all__ = ["SERVED_PREFIX", "OpenAIEngine", "check_served", "is_served", "served_model_name"]
