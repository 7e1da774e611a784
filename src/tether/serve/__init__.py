"""``tether serve``: any Tether model behind an OpenAI-compatible HTTP API (``create_app``), with
echo + logprobs for lm-eval's ``local-completions`` and dynamic batching of concurrent requests.

``create_app`` and ``ServeLimits`` are imported lazily so that the CLI, which mounts
``tether.serve.cli``, does not import FastAPI until a server starts."""

__all__ = ["ServeLimits", "create_app"]


def __getattr__(name: str):
    if name in __all__:
        from tether.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'tether.serve' has no attribute {name!r}")
