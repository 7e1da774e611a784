"""`tether serve SPEC`: serve a Tether model over an OpenAI-compatible API."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tether.errors import ConfigError


def serve_command(
    spec: Annotated[
        str, typer.Argument(help="Model to serve: 'default', an HF dir, a .gguf, an adapter dir.")
    ],
    host: Annotated[
        str, typer.Option(help="Interface to bind; keep loopback unless behind a proxy.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    name: Annotated[
        str | None, typer.Option("--name", help="Model name clients ask for (default: the model's name).")
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env",
            help="NAME of an environment variable holding a key; requests must send it as a bearer token.",
        ),
    ] = None,
    max_body_kb: Annotated[
        int, typer.Option("--max-body-kb", min=1, help="Largest request body; larger gets HTTP 413.")
    ] = 1000,
    max_prompts: Annotated[
        int, typer.Option("--max-prompts", min=1, help="Prompts in one /v1/completions request, at most.")
    ] = 64,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, help="max_tokens of a request, at most.")
    ] = 2048,
    batch_wait_ms: Annotated[
        float,
        typer.Option(
            "--batch-wait-ms", min=0, help="How long the first request waits for others to share its batch."
        ),
    ] = 5.0,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Engine setting, engine.key=value (repeatable).")
    ] = None,
) -> None:
    """Serve a model at http://HOST:PORT/v1 (/models, /completions with echo and logprobs,
    /chat/completions), for lm-eval's local-completions, the openai client, or `tether audit
    openai:NAME --set engine.served.base_url=http://HOST:PORT/v1`."""
    import os

    from tether.config import EngineConfig, load_config
    from tether.feedback.cli import _check_port
    from tether.models.spec import check_spec

    key = None
    if api_key_env is not None:
        key = os.environ.get(api_key_env)
        if not key:
            raise ConfigError(
                f"the environment variable {api_key_env} is not set",
                where=f"--api-key-env {api_key_env}",
                hint=f"export {api_key_env}=<a key>, or drop --api-key-env to serve without one",
            )
    check_spec(spec, where="SPEC")
    if spec.startswith("openai:"):
        raise ConfigError("tether serve serves local weights, not another server's model", where="SPEC")
    config = load_config(EngineConfig, None, [o.removeprefix("engine.") for o in set_ or []])
    _check_port(host, port)

    import uvicorn

    from tether.engine import Engine
    from tether.serve.app import ServeLimits, create_app

    engine = Engine.from_spec(spec, config)
    limits = ServeLimits(max_body_bytes=max_body_kb * 1000, max_prompts=max_prompts, max_tokens=max_tokens)
    app = create_app(engine, model_name=name, api_key=key, limits=limits, batch_wait_s=batch_wait_ms / 1000)
    shown = name or engine.name
    print(f"serving '{shown}' at http://{host}:{port}/v1", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
