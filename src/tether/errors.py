"""One error family for user mistakes: each says what is wrong, where, and how to fix it.

The CLI prints a TetherError as a short message (no traceback unless ``--debug``); any other
exception is a bug in Tether and keeps its traceback.
"""

from __future__ import annotations


class TetherError(Exception):
    """A problem the user can fix. ``where`` is a file[:line] or field; ``hint`` says how to fix it."""

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class Interrupted(TetherError):
    """Ctrl-C or SIGTERM stopped a command. What it finished is kept, and the same command resumes."""

    exit_code = 130


class ConfigError(TetherError):
    """A config file or override that does not validate."""


class DataError(TetherError):
    """A data file that is missing, empty or malformed."""


class ModelLoadError(TetherError):
    """A model spec that does not resolve to loadable weights."""


class MissingDependencyError(TetherError):
    """An optional package is not installed; the hint carries the exact install command."""

    def __init__(self, package: str, purpose: str, install: str | None = None):
        super().__init__(
            f"{purpose} needs the package '{package}', which is not installed",
            hint=f"install it with: {install or f'pip install {package}'}",
        )


class EndpointError(TetherError):
    """A served model's endpoint could not be reached, refused the request, or answered something
    that is not an OpenAI-style response. ``where`` is the URL (or the environment variable)."""


class ScoringUnsupportedError(EndpointError):
    """A served model offers no prompt log-probabilities (``/completions`` with ``echo`` and
    ``logprobs``), so log-likelihood tasks cannot be scored on it: their items come out unscored."""
