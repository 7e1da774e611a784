"""``OpenAIEngine`` against a scripted OpenAI-compatible endpoint (``httpx.MockTransport``): bad
endpoints and keys as one-line errors naming the URL or variable, retries, scoring through echo +
logprobs or reported unsupported, a stable fingerprint, resuming a flaky audit, and the key kept
out of every file of the run."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tether.config import EngineConfig, ServedConfig
from tether.engine.served import OpenAIEngine
from tether.engine.types import Prompt, SamplingParams, ScoreRequest
from tether.errors import ConfigError, EndpointError, ScoringUnsupportedError

URL = "http://served.test/v1"
REFUSAL = "I'm sorry, but I can't help with that."


class FakeServer:
    """An OpenAI-compatible endpoint in a function. Each prompt character is one token of
    log-prob -0.5; ``fail`` maps a prompt text to how many times its chat call fails with 500
    (-1: always); ``echo=False`` answers completions without log-probs (a chat-only API)."""

    def __init__(self, *, key=None, fail=None, echo=True, created=1, models=("m",), completions=True):
        self.key, self.fail, self.echo, self.created = key, dict(fail or {}), echo, created
        self.models, self.completions = models, completions
        self.requests: list[tuple[str, dict]] = []

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.key and request.headers.get("authorization") != f"Bearer {self.key}":
            return httpx.Response(401, json={"error": {"message": "bad key"}})
        path = request.url.path.removeprefix("/v1")
        body = json.loads(request.content) if request.content else {}
        self.requests.append((path, body))
        if path == "/models":
            return httpx.Response(
                200, json={"data": [{"id": m, "created": self.created, "owned_by": "x"} for m in self.models]}
            )
        if path == "/chat/completions":
            text = body["messages"][-1]["content"]
            left = self.fail.get(text, 0)
            if left:
                self.fail[text] = left - 1 if left > 0 else left
                return httpx.Response(500, json={"error": {"message": "overloaded"}})
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": REFUSAL},
                "finish_reason": "stop",
            }
            return httpx.Response(
                200, json={"choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": 9}}
            )
        if path == "/completions":
            if not self.completions:
                return httpx.Response(404, json={"error": {"message": "no such route"}})
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            choices = []
            for i, p in enumerate(prompts):
                choice = {"index": i, "text": p + "!", "finish_reason": "length"}
                if self.echo and body.get("echo"):
                    n = len(p) + 1
                    choice["logprobs"] = {
                        "tokens": [*p, "!"],
                        "token_logprobs": [None] + [-0.5] * (n - 1),
                        "top_logprobs": [None] + [{"x": -0.5}] * (n - 1),
                        "text_offset": list(range(n)),
                    }
                choices.append(choice)
            return httpx.Response(200, json={"choices": choices})
        return httpx.Response(404, json={"error": {"message": "not found"}})


def _engine(server: FakeServer, **settings) -> OpenAIEngine:
    config = ServedConfig(base_url=URL, backoff_s=0, **settings)
    return OpenAIEngine("openai:m", config, client=server.client())


def test_generation_goes_through_chat_and_raw_prompts_through_completions():
    server = FakeServer()
    engine = _engine(server)
    out = engine.generate(
        [Prompt(id="a", text="hi", system="sys"), Prompt(id="b", text="raw", chat=False)],
        SamplingParams(max_new_tokens=7, stop=["\n"]),
        progress=False,
    )
    assert [c.text for c in out] == [REFUSAL, "raw!"]
    chat = next(b for p, b in server.requests if p == "/chat/completions")
    assert chat["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert chat["max_tokens"] == 7 and chat["stop"] == ["\n"] and chat["temperature"] == 0
    assert out[0].completion_tokens == 9 and out[0].prompt_tokens == 5


def test_scoring_reads_the_continuation_tokens_of_an_echoed_prompt():
    engine = _engine(FakeServer())
    [result] = engine.score(
        [ScoreRequest(id="q", context="Answer: ", continuations=["yes", "no"])], progress=False
    )
    # the context's trailing space moves to the continuation (as Engine.encode_score does): " yes"
    assert result.num_tokens == [4, 3]
    assert result.logprobs == [-2.0, -1.5]
    assert result.is_greedy == [True, True]


@pytest.mark.parametrize("server", [FakeServer(echo=False), FakeServer(completions=False)])
def test_a_server_without_prompt_logprobs_makes_scoring_unsupported(server):
    engine = _engine(server)
    request = ScoreRequest(id="q", context="Q", continuations=["a"])
    with pytest.raises(ScoringUnsupportedError, match="log-likelihood tasks are unsupported"):
        engine.score([request], progress=False)
    asked = len(server.requests)
    with pytest.raises(ScoringUnsupportedError):
        engine.score([request], progress=False)
    assert len(server.requests) == asked  # known now: no second request


def test_the_audit_reports_scoring_tasks_unsupported_not_zero(tmp_path):
    from tether.audit.sweep import run_audit

    server = FakeServer(echo=False)
    config = EngineConfig(served=ServedConfig(base_url=URL, backoff_s=0))
    report = run_audit(
        ["openai:m"],
        ["mmlu"],
        tmp_path / "a",
        limit=3,
        engine_config=config,
        load_engine=lambda spec, cfg, tracer: OpenAIEngine(
            spec, cfg.served, tracer=tracer, client=server.client()
        ),
        cache=False,
        progress=False,
    )
    summary = report.summary("openai:m", "mmlu")
    assert summary.n_scored == 0 and not summary.complete and summary.value is None
    assert "unsupported" in json.dumps(report.settings["task errors"])


def test_transient_failures_are_retried_and_persistent_ones_name_the_url():
    server = FakeServer(fail={"flaky": 2, "dead": -1})
    engine = _engine(server, max_retries=2)
    [ok] = engine.generate([Prompt(id="a", text="flaky")], progress=False)
    assert ok.text == REFUSAL
    with pytest.raises(EndpointError, match="no answer after 3 tries") as caught:
        engine.generate([Prompt(id="b", text="dead")], progress=False)
    assert caught.value.where == f"{URL}/chat/completions"


def test_a_flaky_endpoint_audit_resumes_without_repeating_finished_items(tmp_path, monkeypatch):
    """The first run loses one item to the endpoint (unscored, not a refusal); the rerun asks only
    for that item."""
    from tether.audit.sweep import run_audit

    monkeypatch.delenv("TETHER_CACHE", raising=False)
    server = FakeServer()
    down: list[str] = []

    def handle(request, _base=server.handle):
        if request.url.path.endswith("/chat/completions"):
            text = json.loads(request.content)["messages"][-1]["content"]
            server.chats.append(text)
            if not down or text in down:
                down[:] = [text]  # the first prompt asked for never gets through
                return httpx.Response(503, json={"error": {"message": "down"}})
        return _base(request)

    server.chats = []
    config = EngineConfig(served=ServedConfig(base_url=URL, backoff_s=0, max_retries=1))

    def loader(spec, cfg, tracer):
        return OpenAIEngine(
            spec, cfg.served, tracer=tracer, client=httpx.Client(transport=httpx.MockTransport(handle))
        )

    out = tmp_path / "audit"
    report = run_audit(
        ["openai:m"], ["overrefusal"], out, limit=3, engine_config=config, load_engine=loader, progress=False
    )
    summary = report.summary("openai:m", "overrefusal")
    assert summary.n_total == 3 and summary.n_scored == 2 and summary.n_unscored == 1
    down[:] = ["(the endpoint recovered)"]
    server.chats.clear()
    report = run_audit(
        ["openai:m"], ["overrefusal"], out, limit=3, engine_config=config, load_engine=loader, progress=False
    )
    assert len(server.chats) == 1  # only the item the first run lost
    assert report.summary("openai:m", "overrefusal").n_scored == 3


def test_fingerprint_ignores_created_and_follows_url_model_and_metadata():
    a = _engine(FakeServer(created=1)).fingerprint
    assert a == _engine(FakeServer(created=99)).fingerprint
    assert (
        a
        != OpenAIEngine(
            "openai:m", ServedConfig(base_url="http://elsewhere.test/v1"), client=FakeServer().client()
        ).fingerprint
    )
    other = FakeServer()
    other.handle = lambda r, _h=other.handle: (
        httpx.Response(200, json={"data": [{"id": "m", "owned_by": "someone-else"}]})
        if r.url.path.endswith("/models")
        else _h(r)
    )
    assert a != _engine(other).fingerprint


def test_bad_endpoints_and_keys_are_one_line_errors_naming_the_url_or_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError) as caught:
        OpenAIEngine("openai:m", ServedConfig(), client=FakeServer().client())
    assert caught.value.where == "engine.served.base_url" and "OPENAI_BASE_URL" in caught.value.hint

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError) as caught:
        _engine(FakeServer(), api_key_env="NO_SUCH_KEY_VAR")
    assert "NO_SUCH_KEY_VAR" in caught.value.where

    monkeypatch.setenv("WRONG_KEY", "nope")
    with pytest.raises(EndpointError, match="HTTP 401") as caught:
        _engine(FakeServer(key="right"), api_key_env="WRONG_KEY")
    assert caught.value.where == f"{URL}/models" and "$WRONG_KEY" in caught.value.hint

    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    down = httpx.Client(transport=httpx.MockTransport(refuse))
    with pytest.raises(EndpointError, match="cannot connect") as caught:
        OpenAIEngine("openai:m", ServedConfig(base_url=URL, backoff_s=0, max_retries=1), client=down)
    assert caught.value.where == f"{URL}/models" and "\n" not in caught.value.message

    html = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, text="<html>hi</html>")))
    with pytest.raises(EndpointError, match="not JSON"):
        OpenAIEngine("openai:m", ServedConfig(base_url=URL), client=html)

    with pytest.raises(EndpointError, match="it serves: a, b"):
        _engine(FakeServer(models=("a", "b")))


def test_the_api_key_never_reaches_the_run_directory(tmp_path, monkeypatch):
    from tether.audit.sweep import run_audit

    secret = "sk-tether-test-0123456789abcdef"
    monkeypatch.setenv("TETHER_TEST_KEY", secret)
    server = FakeServer(key=secret)
    config = EngineConfig(served=ServedConfig(base_url=URL, api_key_env="TETHER_TEST_KEY", backoff_s=0))
    out = tmp_path / "audit"
    report = run_audit(
        ["openai:m"],
        ["overrefusal", "mmlu"],
        out,
        limit=2,
        engine_config=config,
        load_engine=lambda spec, cfg, tracer: OpenAIEngine(
            spec, cfg.served, tracer=tracer, client=server.client()
        ),
        progress=False,
    )
    assert report.summary("openai:m", "mmlu").n_scored == 2  # the key was sent and accepted
    files = [p for p in Path(out).rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    assert "TETHER_TEST_KEY" in (out / "manifest.json").read_text()  # the variable's name is kept


def test_served_specs_pass_the_spec_check_and_need_an_endpoint(tmp_path, monkeypatch):
    from tether.audit.sweep import run_audit
    from tether.models.spec import check_spec

    check_spec("openai:some-model")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="endpoint"):
        run_audit(["openai:m"], ["mmlu"], tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()  # refused before the run directory was made
