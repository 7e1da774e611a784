"""An OpenAI-compatible server over one local Engine: ``/v1/models``, ``/v1/completions`` (with
``echo`` and ``logprobs``, ``max_tokens: 0`` allowed, prompts as text or token ids) and
``/v1/chat/completions``.

So lm-eval's ``local-completions`` (log-likelihoods from echoed prompt log-probs), the ``openai``
client and Tether's own ``openai:`` engine all work against any Tether model. Requests arriving
together share one engine call (``tether.serve.batcher``). Log-probs come from the engine's packed
scorer (``Engine.echo``), the one ``Engine.score`` uses, so a served audit matches an in-process one.
Only the likeliest token is offered as an alternative (``top_logprobs`` holds it and the chosen
token); streaming is not supported.
"""

from __future__ import annotations

import hmac
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tether.engine.backend import EchoScores
from tether.engine.types import Prompt, SamplingParams
from tether.errors import TetherError
from tether.serve.batcher import Batcher, ClientGone


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; more is refused with an OpenAI-style error."""

    max_body_bytes: int = 1_000_000  # 413 above this
    max_prompts: int = 64  # prompts in one /v1/completions request
    max_tokens: int = 2048  # max_tokens of one request
    max_n: int = 16


class _Lenient(BaseModel):
    # Clients send fields this server ignores (user, logit_bias, ...): accept them.
    model_config = ConfigDict(extra="allow")


class CompletionBody(_Lenient):
    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    seed: int | None = None
    stream: bool = False


class ChatMessage(_Lenient):
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatBody(_Lenient):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, *, kind: str = "invalid_request_error", code=None, param=None
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, kind=self.kind, code=self.code, param=self.param)


def error_response(status: int, message: str, *, kind="invalid_request_error", code=None, param=None):
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status
    )


def create_app(
    engine,
    *,
    model_name: str | None = None,
    api_key: str | None = None,
    limits: ServeLimits | None = None,
    batch_wait_s: float = 0.005,
    max_batch: int = 64,
) -> FastAPI:
    """The server for ``engine`` (a ``tether.engine.Engine``), under ``model_name`` (default: the
    engine's name). ``api_key``: requests must carry ``Authorization: Bearer <api_key>``."""
    limits = limits or ServeLimits()
    name = model_name or engine.name
    tokenizer = engine.tokenizer
    eos = set(engine.eos_token_ids)
    served = _Served(engine, tokenizer, eos)
    batcher = Batcher(served.run, wait_s=batch_wait_s, max_jobs=max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="tether serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher

    # A plain ASGI middleware, not @app.middleware("http"): Starlette's BaseHTTPMiddleware hides the
    # client's disconnect from request.is_disconnected(), which the batcher needs (see batcher.py).
    app.add_middleware(_Guard, api_key=api_key, limits=limits)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(name, engine)]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        if model_id != name:
            raise ApiError(404, f"model '{model_id}' is not served here", code="model_not_found")
        return _model_card(name, engine)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = _parse(CompletionBody, await _read_json(request, limits))
        _check_model(body.model, name)
        _check_common(body.stream, body.n, body.max_tokens or 0, limits)
        prompts = _prompt_ids(body.prompt, tokenizer)
        if len(prompts) > limits.max_prompts:
            raise ApiError(
                413, f"{len(prompts)} prompts in one request; at most {limits.max_prompts}", param="prompt"
            )
        max_tokens = 16 if body.max_tokens is None else body.max_tokens
        choices, usage = await served.complete(batcher, request, body, prompts, max_tokens)
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": usage,
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = _parse(ChatBody, await _read_json(request, limits))
        _check_model(body.model, name)
        max_tokens = body.max_completion_tokens or body.max_tokens or 256
        _check_common(body.stream, body.n, max_tokens, limits)
        prompt = _chat_prompt(body.messages)
        params = _params(body, max_tokens)
        [completions] = await _submit(batcher, request, _generate_key(params), [prompt])
        choices = [
            {
                "index": c.sample_index,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
            for c in completions
        ]
        prompt_tokens = completions[0].prompt_tokens
        completion_tokens = sum(c.completion_tokens for c in completions)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return app


class _Guard:
    """Refuses, before the body is read, requests without the API key (when one is set) and
    requests whose declared length is over the limit."""

    def __init__(self, app, *, api_key: str | None, limits: ServeLimits):
        self.app, self.api_key, self.limits = app, api_key, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
            guarded = self.api_key is not None and scope["path"].startswith("/v1")
            refusal = None
            if guarded and not hmac.compare_digest(
                headers.get("authorization", ""), f"Bearer {self.api_key}"
            ):
                refusal = error_response(
                    401, "missing or wrong API key (Authorization: Bearer ...)", code="invalid_api_key"
                )
            else:
                length = headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
                    refusal = _too_large(self.limits)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _model_card(name: str, engine) -> dict[str, Any]:
    # `created` is fixed so that clients fingerprinting the model list see the same model across
    # restarts; `fingerprint` changes with the weights.
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "tether",
        "fingerprint": engine.fingerprint,
        "max_model_len": engine.loaded.context_length,
    }


def _too_large(limits: ServeLimits) -> JSONResponse:
    return error_response(
        413, f"request body larger than {limits.max_body_bytes} bytes", code="request_too_large"
    )


async def _read_json(request: Request, limits: ServeLimits) -> Any:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.max_body_bytes:  # a chunked body has no content-length to refuse early
            raise ApiError(
                413, f"request body larger than {limits.max_body_bytes} bytes", code="request_too_large"
            )
    import json

    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON ({exc})") from None


def _parse(model: type[BaseModel], data: Any):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(400, f"{where}: {first['msg']}", param=where) from None


def _check_model(asked: str | None, name: str) -> None:
    if asked and asked != name:
        raise ApiError(
            404, f"model '{asked}' is not served here; this server serves '{name}'", code="model_not_found"
        )


def _check_common(stream: bool, n: int, max_tokens: int, limits: ServeLimits) -> None:
    if stream:
        raise ApiError(400, "streaming is not supported by tether serve", param="stream")
    if n > limits.max_n:
        raise ApiError(400, f"n={n}; at most {limits.max_n}", param="n")
    if max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens={max_tokens}; at most {limits.max_tokens}", param="max_tokens")


def _prompt_ids(prompt, tokenizer) -> list[tuple[str, list[int]]]:
    """(text, token ids) per prompt: a string, a list of strings, token ids, or lists of token ids."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not prompt:
        raise ApiError(400, "no prompt", param="prompt")
    out = []
    for p in prompt:
        if isinstance(p, str):
            ids = tokenizer(p, add_special_tokens=False)["input_ids"]
            out.append((p, ids))
        else:
            if any(not 0 <= t < len(tokenizer) for t in p):
                raise ApiError(400, "a token id is outside the vocabulary", param="prompt")
            out.append((tokenizer.decode(p), list(p)))
        if not out[-1][1]:
            raise ApiError(400, "an empty prompt", param="prompt")
    return out


def _chat_prompt(messages: list[ChatMessage]) -> Prompt:
    def text(m: ChatMessage) -> str:
        if isinstance(m.content, list):
            return "".join(part.get("text", "") for part in m.content if part.get("type") == "text")
        return m.content or ""

    system = None
    rest = list(messages)
    if rest[0].role in ("system", "developer"):
        system, rest = text(rest[0]), rest[1:]
    if not rest or rest[-1].role != "user":
        raise ApiError(400, "the last message must be the user's", param="messages")
    history = []
    for m in rest[:-1]:
        if m.role not in ("user", "assistant"):
            raise ApiError(400, f"unsupported role '{m.role}' in the conversation", param="messages")
        history.append({"role": m.role, "content": text(m)})
    extra = {"history": history} if history else {}
    return Prompt(id="chat", text=text(rest[-1]), system=system, chat=True, **extra)


def _params(body, max_tokens: int) -> SamplingParams:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return SamplingParams(
        max_new_tokens=max(1, max_tokens),
        temperature=body.temperature,
        top_p=body.top_p,
        n=body.n,
        seed=body.seed or 0,
        stop=stop,
    )


def _generate_key(params: SamplingParams) -> tuple[str, str]:
    # Requests with equal sampling settings share a batch; the key must hash (a stop list does not).
    return ("generate", params.model_dump_json())


async def _submit(batcher: Batcher, request: Request, key, inputs) -> list[Any]:
    try:
        return await batcher.submit(key, inputs, gone=request.is_disconnected)
    except ClientGone:
        # Nobody reads this answer; 499 is what nginx logs for a client that closed the request.
        raise ApiError(499, "the client closed the request", code="client_closed_request") from None
    except TetherError as exc:
        raise ApiError(400, exc.message) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


class _Served:
    """The engine calls behind the endpoints, run by the batcher on its one thread."""

    def __init__(self, engine, tokenizer, eos: set[int]):
        self.engine, self.tokenizer, self.eos = engine, tokenizer, eos

    def run(self, key, inputs: list[Any]) -> list[Any]:
        if key[0] == "echo":
            return self.engine.echo(inputs, stage="serve")
        params = SamplingParams.model_validate_json(key[1])
        flat = self.engine.generate(inputs, params, stage="serve", progress=False)
        n = params.n
        return [flat[i * n : (i + 1) * n] for i in range(len(inputs))]

    async def complete(
        self, batcher: Batcher, request: Request, body: CompletionBody, prompts, max_tokens: int
    ):
        """Choices and usage for a /v1/completions request. ``max_tokens`` 0 scores the prompt only;
        a greedy single token comes from the same forward as the prompt's log-probs; anything else
        is generated, then scored when log-probs are asked for."""
        greedy_one = max_tokens == 1 and body.temperature == 0 and not body.stop
        want_logprobs = body.logprobs is not None
        per_prompt: list[list[tuple[list[int], list[int], str, str]]] = []  # (ids, new ids, text, finish)
        scored: dict[tuple[int, ...], EchoScores] = {}
        if max_tokens == 0 or greedy_one:
            echoes = await _submit(batcher, request, ("echo",), [ids for _, ids in prompts])
            for (_, ids), echo in zip(prompts, echoes, strict=True):
                if max_tokens == 0:
                    per_prompt.append([(ids, [], "", "length")] * body.n)
                    scored[tuple(ids)] = echo
                    continue
                token = echo.greedy_ids[-1]
                done = token in self.eos
                text = "" if done else self.tokenizer.decode([token])
                per_prompt.append([(ids, [token], text, "stop" if done else "length")] * body.n)
                # The greedy token's log-prob is the prompt's last prediction: no second forward.
                scored[(*ids, token)] = EchoScores(
                    logprobs=[*echo.logprobs, echo.greedy_logprobs[-1]],
                    greedy_ids=echo.greedy_ids,
                    greedy_logprobs=echo.greedy_logprobs,
                )
        else:
            params = _params(body, max_tokens)
            batch = [Prompt(id=str(i), text=text, chat=False) for i, (text, _) in enumerate(prompts)]
            for completions in await _submit(batcher, request, _generate_key(params), batch):
                per_prompt.append(
                    [
                        (c.prompt_token_ids or [], c.token_ids or [], c.text, c.finish_reason)
                        for c in completions
                    ]
                )
        if want_logprobs:
            sequences = [
                seq
                for seq in dict.fromkeys(
                    tuple(ids + new) for samples in per_prompt for ids, new, _, _ in samples
                )
                if seq not in scored
            ]
            if sequences:
                echoes = await _submit(batcher, request, ("echo",), [list(s) for s in sequences])
                scored.update(zip(sequences, echoes, strict=True))
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for p, ((prompt_text, _), samples) in enumerate(zip(prompts, per_prompt, strict=True)):
            for k, (ids, new, text, finish) in enumerate(samples):
                choice: dict[str, Any] = {
                    "index": p * body.n + k,
                    "text": (prompt_text + text) if body.echo else text,
                    "logprobs": None,
                    "finish_reason": finish,
                }
                if want_logprobs:
                    choice["logprobs"] = self._logprobs(ids, new, scored[tuple(ids + new)], body.echo)
                choices.append(choice)
                completion_tokens += len(new)
            prompt_tokens += len(samples[0][0]) if samples else 0
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return choices, usage

    def _logprobs(self, ids: list[int], new: list[int], echo, with_prompt: bool) -> dict[str, Any]:
        """OpenAI's legacy logprobs object over the prompt (when echoed) and the new tokens."""
        seq = ids + new
        piece = [self.tokenizer.decode([t]) for t in seq]
        lps: list[float | None] = [None, *echo.logprobs]
        tops: list[dict[str, float] | None] = [None]
        for j in range(1, len(seq)):
            top = {piece[j]: echo.logprobs[j - 1]}
            top[self.tokenizer.decode([echo.greedy_ids[j - 1]])] = echo.greedy_logprobs[j - 1]
            tops.append(top)
        offsets, at = [], 0
        for text in piece:
            offsets.append(at)
            at += len(text)
        start = 0 if with_prompt else len(ids)
        return {
            "tokens": piece[start:],
            "token_logprobs": lps[start:],
            "top_logprobs": tops[start:],
            "text_offset": offsets[start:],
        }


__all__ = ["ServeLimits", "create_app"]
