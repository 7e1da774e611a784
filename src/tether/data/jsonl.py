"""JSONL reading with line-numbered errors, and writing that never leaves a half file looking complete."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from tether.errors import DataError
from tether.inputs import check_input_file, decode_utf8, os_reason

M = TypeVar("M", bound=BaseModel)
OnError = Literal["stop", "skip"]


def describe_validation_error(err: ValidationError) -> str:
    """One line per failed field: ``field 'a.b': message``, joined by '; '."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(record)"
        parts.append(f"field '{loc}': {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def iter_numbered(
    path: str | Path,
    model: type[M] | None = None,
    *,
    on_error: OnError = "stop",
    hint: str | None = None,
    missing_hint: str = "check the path",
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, record)`` per non-blank line, so callers can name lines in their own
    checks (a repeated id, an empty field).

    With ``on_error="skip"`` a bad line is reported as a warning naming file:line and skipped;
    with ``"stop"`` it raises DataError naming file:line and the field, with ``hint`` if given
    (say "pass --on-error skip" only where the command has that flag). A missing file, a
    directory, an unreadable file and a line that is not UTF-8 are DataErrors naming the file.
    """
    path = check_input_file(path, hint=missing_hint)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read file: {os_reason(exc)}", where=str(path)) from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            line = decode_utf8(raw, str(path), line=lineno)
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
                yield lineno, (model.model_validate(obj) if model is not None else obj)
            except json.JSONDecodeError as exc:
                _bad_line(where, f"not valid JSON ({exc.msg} at column {exc.colno})", on_error, hint)
            except ValidationError as exc:
                _bad_line(where, describe_validation_error(exc), on_error, hint)


def iter_jsonl(
    path: str | Path, model: type[M] | None = None, *, on_error: OnError = "stop", hint: str | None = None
) -> Iterator[Any]:
    """Yield one parsed record per non-blank line (see :func:`iter_numbered` for errors)."""
    for _, record in iter_numbered(path, model, on_error=on_error, hint=hint):
        yield record


def _bad_line(where: str, problem: str, on_error: OnError, hint: str | None = None) -> None:
    if on_error == "stop":
        raise DataError(problem, where=where, hint=hint or "fix the line")
    warnings.warn(f"{where}: skipped: {problem}", stacklevel=4)


def read_jsonl(
    path: str | Path,
    model: type[M] | None = None,
    *,
    on_error: OnError = "stop",
    allow_empty: bool = False,
    unique: str | None = None,
    hint: str | None = None,
) -> list[Any]:
    """Every record of a JSONL file. ``unique`` names a field whose values must not repeat (a
    repeat is a DataError naming both lines)."""
    records = []
    first_line: dict[Any, int] = {}
    for lineno, record in iter_numbered(path, model, on_error=on_error, hint=hint):
        if unique is not None:
            key = record.get(unique) if isinstance(record, dict) else getattr(record, unique, None)
            if key in first_line:
                raise DataError(
                    f"{unique} '{key}' repeats (first on line {first_line[key]})",
                    where=f"{path}:{lineno}",
                    hint=f"give every record its own {unique}",
                )
            first_line[key] = lineno
        records.append(record)
    if not records and not allow_empty:
        raise DataError("file has no records", where=str(path), hint="add at least one JSON object per line")
    return records


def _dump(record: Any) -> str:
    if isinstance(record, BaseModel):
        return record.model_dump_json()
    return json.dumps(record, ensure_ascii=False)


@contextmanager
def atomic_writer(path: str | Path, mode: str = "w"):
    """Write to a temp file beside ``path`` and rename on success, so a crash never leaves a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        # mkstemp creates 0600; give the result the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Atomically write all records; returns how many were written."""
    count = 0
    with atomic_writer(path) as handle:
        for record in records:
            handle.write(_dump(record) + "\n")
            count += 1
    return count


class JsonlAppender:
    """Appends records one at a time, flushed per record, so an interrupted stage keeps what it finished.

    Used for resumable stages: the reader takes every complete line; a torn last line (from a kill
    mid-write) is dropped by ``read_completed``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")

    def write(self, record: Any) -> None:
        self._handle.write(_dump(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_completed(path: str | Path, model: type[M] | None = None) -> list[Any]:
    """Records from an append-only file, tolerating one torn final line (which is truncated away)."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        path.write_bytes(raw[:cut])
    return read_jsonl(path, model, allow_empty=True)
