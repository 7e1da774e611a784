"""``tether serve``: any Tether model behind an OpenAI-compatible HTTP API (``create_app``), with
echo + logprobs for lm-eval's ``local-completions`` and dynamic batching of concurrent requests."""

from tether.serve.app import ServeLimits, create_app

__all__ = ["ServeLimits", "create_app"]
