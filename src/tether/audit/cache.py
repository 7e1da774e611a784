"""Per-item audit results in SQLite, so re-running an audit (or adding one checkpoint) evaluates only
what is missing.

A result is keyed by (model fingerprint, task, task version, item id). The fingerprint comes from the
weights, not the display name, so a renamed or moved checkpoint still hits; the task version hashes
the prompt format, sampling parameters and judge, so changing any of them misses. The sweep writes
after every batch (one transaction each) in WAL mode: a crash or Ctrl-C loses at most the batch in
flight, and a reader never sees a half-written batch.

Results with status "error" are never stored: an exception may be transient (out of memory, a
sandbox hiccup) and deserves a retry on the next run.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tether.errors import DataError
from tether.evals.types import ItemResult

CACHE_FILENAME = "audit.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    fingerprint TEXT NOT NULL,
    task TEXT NOT NULL,
    version TEXT NOT NULL,
    item_id TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (fingerprint, task, version, item_id)
)
"""
_COLUMNS = ["fingerprint", "task", "version", "item_id", "result", "created"]
_CHUNK = 500  # SQLite's default limit on bound parameters is 999


def default_cache_path(out_dir: str | Path) -> Path:
    """``$TETHER_CACHE/audit.sqlite`` when TETHER_CACHE is set (shared by every audit on the machine),
    else ``audit.sqlite`` in the audit's output directory."""
    root = os.environ.get("TETHER_CACHE")
    return Path(root) / CACHE_FILENAME if root else Path(out_dir) / CACHE_FILENAME


class ResultCache:
    """Item results keyed by (fingerprint, task, version, item_id). Use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        hint = "pass another --cache file (one `tether audit` wrote), or --no-cache"
        if self.path.is_dir():
            raise DataError("is a directory; expected an audit cache file", where=str(self.path), hint=hint)
        existed = self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0)
        except (OSError, sqlite3.Error) as exc:
            raise DataError(f"cannot open the audit cache ({exc})", where=str(self.path), hint=hint) from None
        try:
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(results)")]
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if (columns and columns != _COLUMNS) or tables - {"results"}:
                raise DataError(
                    "not an audit cache (it holds other tables or columns)", where=str(self.path), hint=hint
                )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
            self._db.execute(_SCHEMA)
            self._db.commit()
        except BaseException as exc:
            self._db.close()
            if not existed:
                self.path.unlink(missing_ok=True)
            if isinstance(exc, sqlite3.DatabaseError):
                raise DataError(f"not an audit cache ({exc})", where=str(self.path), hint=hint) from None
            raise

    def get(
        self, fingerprint: str, task: str, version: str, item_ids: Iterable[str]
    ) -> dict[str, ItemResult]:
        """The cached results among ``item_ids``, by item id."""
        ids = list(dict.fromkeys(item_ids))
        found: dict[str, ItemResult] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows = self._db.execute(
                f"SELECT item_id, result FROM results WHERE fingerprint=? AND task=? AND version=? "
                f"AND item_id IN ({','.join('?' * len(chunk))})",
                (fingerprint, task, version, *chunk),
            )
            for item_id, blob in rows:
                found[item_id] = ItemResult.model_validate_json(blob)
        return found

    def put(self, fingerprint: str, task: str, version: str, results: Sequence[ItemResult]) -> int:
        """Store results (all in one transaction); returns how many were stored (errors are skipped)."""
        now = time.time()
        rows = [
            (fingerprint, task, version, r.item_id, r.model_dump_json(), now)
            for r in results
            if r.status != "error"
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def count(self, fingerprint: str | None = None, task: str | None = None) -> int:
        query, args = "SELECT COUNT(*) FROM results WHERE 1=1", []
        if fingerprint is not None:
            query, args = query + " AND fingerprint=?", [*args, fingerprint]
        if task is not None:
            query, args = query + " AND task=?", [*args, task]
        return int(self._db.execute(query, args).fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullCache:
    """The cache interface that stores nothing (``--no-cache``)."""

    path = None

    def get(
        self, fingerprint: str, task: str, version: str, item_ids: Iterable[str]
    ) -> dict[str, ItemResult]:
        return {}

    def put(self, fingerprint: str, task: str, version: str, results: Sequence[ItemResult]) -> int:
        return 0

    def close(self) -> None:
        pass

    def __enter__(self) -> NullCache:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


__all__ = ["CACHE_FILENAME", "NullCache", "ResultCache", "default_cache_path"]
