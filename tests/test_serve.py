"""`tether serve` and the served-model engine against it: the OpenAI wire format (echo, logprobs,
max_tokens 0, token-id prompts), limits and keys, dynamic batching, and parity: an audit through the
server gives the in-process audit's greedy text and log-probabilities."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tether.config import EngineConfig, ServedConfig
from tether.serve import ServeLimits, create_app


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from tether.engine import Engine

    return Engine.from_spec(str(tiny_model_dir))


@pytest.fixture()
def client(engine):
    with TestClient(create_app(engine, model_name="tiny")) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(engine):
    """A real uvicorn serving the tiny model on a free port (threads, real sockets, real batching)."""
    import uvicorn

    app = create_app(engine, model_name="tiny", batch_wait_s=0.02)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", app
    srv.should_exit = True
    thread.join(timeout=10)


def test_models_lists_the_model_with_a_stable_card(client, engine):
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["tiny"]
    assert data[0]["created"] == 0 and data[0]["fingerprint"] == engine.fingerprint


def test_echo_with_max_tokens_0_scores_the_prompt_like_engine_score(client, engine):
    from tether.engine.types import ScoreRequest

    context, cont = "The capital of France is", " Paris"
    body = {"model": "tiny", "prompt": context + cont, "max_tokens": 0, "echo": True, "logprobs": 1}
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"] == context + cont
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    n_ctx = len(engine.tokenizer(context, add_special_tokens=False)["input_ids"])
    served = sum(lp["token_logprobs"][n_ctx:])
    [local] = engine.score([ScoreRequest(id="x", context=context, continuations=[cont])])
    assert abs(served - local.logprobs[0]) < 1e-4
    # is_greedy as lm-eval reads it: the chosen token's log-prob is the largest offered.
    greedy = all(
        t == max(top.values())
        for t, top in zip(lp["token_logprobs"][n_ctx:], lp["top_logprobs"][n_ctx:], strict=True)
    )
    assert greedy == local.is_greedy[0]
    assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])


def test_token_id_prompts_and_lm_eval_shaped_requests(client, engine):
    """lm-eval's local-completions sends token ids, max_tokens 1, echo, logprobs 1, a batch of prompts."""
    ids = [engine.tokenizer("Hello there, how are you", add_special_tokens=False)["input_ids"], [1, 2, 3]]
    body = {"model": "tiny", "prompt": ids, "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 1}
    out = client.post("/v1/completions", json=body).json()
    assert [c["index"] for c in out["choices"]] == [0, 1]
    for choice, seq in zip(out["choices"], ids, strict=True):
        # the prompt's tokens then the one generated token: lm-eval drops the last
        assert len(choice["logprobs"]["token_logprobs"]) == len(seq) + 1
    greedy = client.post(
        "/v1/completions", json={"prompt": ids[0], "max_tokens": 1, "temperature": 0}
    ).json()["choices"][0]
    from tether.engine.types import Prompt, SamplingParams

    [local] = engine.generate(
        [Prompt(id="a", text=engine.tokenizer.decode(ids[0]), chat=False)],
        SamplingParams(max_new_tokens=1),
        progress=False,
    )
    assert greedy["text"] == local.text
    assert out["usage"]["prompt_tokens"] == sum(map(len, ids))


def test_chat_completion_is_the_engines_greedy_answer(client, engine):
    from tether.engine.types import Prompt, SamplingParams

    body = {
        "model": "tiny",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    out = client.post("/v1/chat/completions", json=body).json()
    [local] = engine.generate(
        [Prompt(id="a", text="Hi!", system="Be brief.")], SamplingParams(max_new_tokens=8), progress=False
    )
    assert out["choices"][0]["message"]["content"] == local.text
    assert out["usage"]["completion_tokens"] == local.completion_tokens


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/completions", {"model": "other", "prompt": "x"}, 404, "model_not_found"),
        ("/v1/completions", {"prompt": "x", "stream": True}, 400, None),
        ("/v1/completions", {"prompt": "x", "max_tokens": 99999}, 400, None),
        ("/v1/completions", {"prompt": ["x"] * 65}, 413, None),
        ("/v1/completions", {"prompt": "x" * 2_000_000}, 413, "request_too_large"),
        ("/v1/completions", {"prompt": [999999999]}, 400, None),
        ("/v1/chat/completions", {"messages": [{"role": "assistant", "content": "x"}]}, 400, None),
        ("/v1/completions", {"max_tokens": 3}, 400, None),
    ],
)
def test_bad_requests_get_openai_style_errors(client, path, body, status, code):
    response = client.post(path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error" and error["code"] == code


def test_a_too_large_body_is_refused_before_it_is_read(engine):
    with TestClient(create_app(engine, limits=ServeLimits(max_body_bytes=100))) as c:
        response = c.post("/v1/completions", content=b'{"prompt": "' + b"x" * 200 + b'"}')
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_bearer_key_is_required_when_set(engine):
    with TestClient(create_app(engine, api_key="sekrit")) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer sekrit"}).status_code == 200


def test_concurrent_requests_share_engine_calls(server):
    import httpx

    url, app = server
    before = len(app.state.batcher.batches)
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 0, "echo": True, "logprobs": 1}
    results = []

    def call():
        results.append(httpx.post(f"{url}/completions", json=body, timeout=60).json())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len({json.dumps(r["choices"]) for r in results}) == 1
    sizes = app.state.batcher.batches[before:]
    assert sum(sizes) == 8 and max(sizes) > 1  # at least two requests shared one engine call


def test_the_openai_client_works_against_tether_serve(server):
    openai = pytest.importorskip("openai")
    url, _ = server
    client = openai.OpenAI(base_url=url, api_key="unused")
    assert [m.id for m in client.models.list()] == ["tiny"]
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    assert isinstance(chat.choices[0].message.content, str)
    done = client.completions.create(model="tiny", prompt="Hello", max_tokens=0, echo=True, logprobs=1)
    assert done.choices[0].logprobs.token_logprobs[0] is None


def test_an_audit_through_the_server_matches_the_audit_in_process(
    server, tiny_model_dir, tmp_path, monkeypatch
):
    """Same items, same greedy answers, log-probabilities within 1e-4; and the served model's
    results land in the cache under its own fingerprint."""
    from tether.audit.sweep import run_audit

    monkeypatch.delenv("TETHER_CACHE", raising=False)
    url, _ = server
    tasks = ["overrefusal", "mmlu"]
    local = run_audit([str(tiny_model_dir)], tasks, tmp_path / "local", limit=3, cache=False, progress=False)
    config = EngineConfig(served=ServedConfig(base_url=url))
    served = run_audit(
        ["openai:tiny"], tasks, tmp_path / "served", limit=3, engine_config=config, progress=False
    )

    def summaries(report):
        return {(s.task, s.n_scored, s.value) for s in report.tasks}

    assert summaries(local) == summaries(served)

    def traces(out: Path, kind: str, key: str, value: str):
        rows = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
        return {r[key]: r[value] for r in rows if r["kind"] == kind}

    answers = traces(tmp_path / "local", "generate", "prompt_id", "output")
    assert answers == traces(tmp_path / "served", "generate", "prompt_id", "output") and len(answers) == 3
    here = traces(tmp_path / "local", "score", "item_id", "logprobs")
    there = traces(tmp_path / "served", "score", "item_id", "logprobs")
    assert here.keys() == there.keys() and len(here) == 3
    worst = max(abs(a - b) for k in here for a, b in zip(here[k], there[k], strict=True))
    assert worst < 1e-4 and not math.isnan(worst)


def test_a_request_whose_client_gave_up_is_never_run(engine):
    """A client that times out while the engine is busy must not leave its job queued: otherwise
    every retry adds to the abandoned work and a server that once fell behind never catches up."""
    import httpx
    import uvicorn

    app = create_app(engine, model_name="tiny", batch_wait_s=0.0)
    batcher = app.state.batcher
    run, ran, release = batcher.run, [], threading.Event()

    def slow_run(key, inputs):
        ran.append(len(inputs))
        if len(ran) == 1:
            release.wait(30)  # the engine is busy with the first request
        return run(key, inputs)

    batcher.run = slow_run
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if srv.started:
                break
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v1/completions"
        first = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 0, "echo": True, "logprobs": 1}
        answers = []
        busy = threading.Thread(target=lambda: answers.append(httpx.post(url, json=first, timeout=30)))
        busy.start()
        time.sleep(0.3)
        impatient = {**first, "prompt": ["a b c", "d e f"]}
        for _ in range(3):
            with pytest.raises(httpx.TimeoutException):
                httpx.post(url, json=impatient, timeout=0.2)
        for _ in range(100):  # the server notices within its poll interval
            if batcher.dropped == 3:
                break
            time.sleep(0.05)
        release.set()
        busy.join()
        assert answers[0].status_code == 200
        assert ran == [1]  # only the patient request reached the engine
        assert batcher.dropped == 3
        # and the server still answers the next request
        assert httpx.post(url, json=first, timeout=30).status_code == 200
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
