"""What users hand Tether, checked before any work starts: files to read, paths to write, names to match.

Every failure is a TetherError that names the file or flag and says how to fix it, so a command
refuses a bad input in its first second instead of after a model has loaded (or an hour of
training). Readers here never let an OSError or a UnicodeDecodeError through.
"""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tether.errors import DataError, TetherError

UTF8_HINT = "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8)"


def did_you_mean(name: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """ "did you mean 'x'?" for the closest of ``choices``, or None when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=cutoff)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def check_known(names: Sequence[str], known: Sequence[str], kind: str) -> None:
    """ValueError naming every unknown name, with "did you mean" for the close ones and the known list
    (a pydantic validator turns it into a one-line error naming the field)."""
    unknown = [n for n in names if n not in known]
    if unknown:
        close = [c for c in (did_you_mean(n, known) for n in unknown) if c]
        raise ValueError(
            f"unknown {kind} {', '.join(map(repr, unknown))}; "
            + ("; ".join(close) + " " if close else "")
            + f"(known: {', '.join(known)})"
        )


def os_reason(exc: OSError) -> str:
    """A short lower-case reason for an OSError ("permission denied", "is a directory")."""
    reasons = {
        errno.ENOENT: "no such file or directory",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "is a directory, not a file",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.EROFS: "read-only file system",
        errno.ENOSPC: "no space left on the device",
        errno.EEXIST: "already exists",
    }
    return reasons.get(exc.errno, (exc.strerror or str(exc)).lower())


def check_input_file(
    path: str | Path,
    *,
    flag: str | None = None,
    what: str = "file",
    error: type[TetherError] = DataError,
    hint: str | None = None,
) -> Path:
    """``path`` is an existing, readable regular file; else ``error`` naming it (and ``flag``)."""
    path = Path(path)
    label = f"{flag} {path}" if flag else str(path)
    if not path.exists():
        raise error(f"{what} not found", where=label, hint=hint or "check the path")
    if path.is_dir():
        raise error(f"is a directory; expected a {what}", where=label, hint="pass a file, not a folder")
    if not os.access(path, os.R_OK):
        raise error(f"{what} is not readable (permission denied)", where=label, hint="check its permissions")
    return path


def decode_utf8(
    data: bytes, where: str, *, error: type[TetherError] = DataError, line: int | None = None
) -> str:
    """``data`` as UTF-8 text; a bad byte is ``error`` at ``where:line`` (the line counted in ``data``
    when ``line`` is not given) with the byte and its column."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark (Windows editors)
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        lineno = line if line is not None else before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise error(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column})",
            where=f"{where}:{lineno}",
            hint=UTF8_HINT,
        ) from None


def read_text(
    path: str | Path,
    *,
    flag: str | None = None,
    what: str = "file",
    error: type[TetherError] = DataError,
    hint: str | None = None,
) -> str:
    """The whole of a UTF-8 text file; a missing file, a directory, an unreadable file or a bad byte
    is ``error`` naming the file (and the line of the bad byte)."""
    path = check_input_file(path, flag=flag, what=what, error=error, hint=hint)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what}: {os_reason(exc)}", where=str(path)) from None
    return decode_utf8(data, str(path), error=error)


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _check_creatable(path: Path, flag: str, what: str) -> None:
    """The folders above ``path`` exist or can be made, and the nearest existing one is writable."""
    anchor = _nearest_existing(path.parent)
    if not anchor.is_dir():
        raise TetherError(
            f"cannot create {path}: {anchor} is a file, not a directory",
            where=flag,
            hint=f"choose a {what} whose parent folders are directories",
        )
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise TetherError(
            f"cannot create {path}: {anchor} is not writable", where=flag, hint=f"choose a writable {what}"
        )


def check_output_file(
    path: str | Path, *, flag: str = "--out", inputs: dict[str, str | Path | None] | None = None
) -> Path:
    """``path`` can be written as a file: not a directory, its folder creatable and writable, and
    not one of the command's ``inputs`` ({flag: path}), which writing it would destroy."""
    path = Path(path)
    for input_flag, source in (inputs or {}).items():
        if source is not None and path.exists() and Path(source).exists() and path.samefile(source):
            raise TetherError(
                f"{path} is also the input {input_flag}; writing it would overwrite that input",
                where=flag,
                hint=f"write to another file, e.g. {flag} {path.with_name(path.stem + '-out' + path.suffix)}",
            )
    if path.is_dir():
        raise TetherError(
            f"{path} is a directory; {flag} takes a file path",
            where=flag,
            hint=f"e.g. {flag} {path / 'out.jsonl'}",
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise TetherError(f"{path} is not writable", where=flag, hint="check its permissions")
    _check_creatable(path, flag, "file path")
    return path


def check_output_dir(path: str | Path, *, flag: str = "--out") -> Path:
    """``path`` can be used as an output directory: a directory if it exists, else creatable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TetherError(
            f"{path} is a file; {flag} takes a directory", where=flag, hint="choose a directory path"
        )
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise TetherError(f"{path} is not writable", where=flag, hint="choose a writable directory")
        return path
    _check_creatable(path, flag, "directory")
    return path


def check_input_dir(path: str | Path, *, flag: str, what: str = "directory", hint: str | None = None) -> Path:
    """``path`` is an existing directory; else an error naming ``flag`` and the path."""
    path = Path(path)
    if not path.exists():
        raise TetherError(f"{path}: {what} not found", where=flag, hint=hint or "check the path")
    if not path.is_dir():
        raise TetherError(f"{path} is a file; expected a {what}", where=flag, hint=hint)
    return path


__all__ = [
    "UTF8_HINT",
    "check_input_dir",
    "check_input_file",
    "check_output_dir",
    "check_output_file",
    "decode_utf8",
    "check_known",
    "did_you_mean",
    "os_reason",
    "read_text",
]
