"""Where messages go when Tether runs as a command.

The user sees Tether's own messages and warnings on stderr, one plain line each ("warning: ..."),
and Tether's progress bars. What libraries say (transformers, TRL, PEFT, torch: their warnings,
FutureWarnings and loggers) goes to ``log.txt`` in the run directory, or nowhere when the command
has no run directory; ``--debug`` shows all of it on stderr. Library tqdm bars are off: their
redraws fill non-terminal logs, and Tether's own bars say the same.

Only the CLI calls :func:`setup_cli_logging`; a program that imports Tether as a library keeps its
own logging. :func:`attach_run_log` (called by ``tether.runs.Run.create``) does nothing until then.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_LIBRARY_ENV = {
    "TQDM_DISABLE": "1",  # read when tqdm is imported: set before the libraries load
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
_state: dict = {"on": False, "debug": False, "file": None}


def quiet_library_progress() -> None:
    """Library progress bars off for this process and its children (before the libraries import)."""
    for key, value in _LIBRARY_ENV.items():
        os.environ.setdefault(key, value)


def _from_tether(record: logging.LogRecord) -> bool:
    return record.name == "tether" or record.name.startswith("tether.")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a test runner swaps it per command)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _ToUser(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _state["debug"] or _from_tether(record)


class _UserFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning: Tether's warnings are messages to the user (one line, no source path);
    a library's go to the run's log file."""
    try:
        ours = Path(filename).resolve().is_relative_to(_PACKAGE_DIR)
    except (OSError, ValueError):
        ours = False
    # A library's deprecation notice may point at Tether's call site (stacklevel): still the library's.
    ours = ours and not issubclass(category, DeprecationWarning | PendingDeprecationWarning | FutureWarning)
    if ours:
        logging.getLogger("tether.warnings").warning("%s", message)
    else:
        logging.getLogger("py.warnings").info("%s:%s: %s: %s", filename, lineno, category.__name__, message)


def setup_cli_logging(*, debug: bool = False) -> None:
    """Route messages as the module docstring says. Idempotent (every CLI invocation calls it)."""
    quiet_library_progress()
    _state.update(on=True, debug=debug)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tether", False) and not isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    user = _CurrentStderr()
    user._tether = True  # type: ignore[attr-defined]
    user.setLevel(logging.DEBUG if debug else logging.WARNING)
    user.addFilter(_ToUser())
    user.setFormatter(_UserFormat())
    root.addHandler(user)
    warnings.showwarning = _show_warning
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - a dependency
        return
    # transformers prints through its own stderr handler; send its records through ours instead.
    if debug:
        hf_logging.set_verbosity_debug()
    else:
        hf_logging.set_verbosity_warning()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.disable_progress_bar()


def attach_run_log(run_dir: str | Path) -> Path | None:
    """Send everything logged from now on (library chatter included) to ``run_dir/log.txt``. The
    first run directory of a command keeps it (a nested run logs into its parent's file)."""
    if not _state["on"] or _state["file"] is not None:
        return None
    path = Path(run_dir) / "log.txt"
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return None
    handler._tether = True  # type: ignore[attr-defined]
    handler.setLevel(logging.DEBUG if _state["debug"] else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    _state["file"] = handler
    return path


def detach_run_log() -> None:
    """Close the run log (the end of a command; tests invoking several commands in one process)."""
    handler = _state["file"]
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()
        _state["file"] = None


__all__ = ["attach_run_log", "detach_run_log", "quiet_library_progress", "setup_cli_logging"]
