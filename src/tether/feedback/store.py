"""The label database: SQLite in WAL mode, one short connection per operation.

Every write runs in its own ``BEGIN IMMEDIATE ... COMMIT`` with ``synchronous=FULL``, so a vote is on
disk before the server answers, and a crash or restart loses nothing. Tokens and session ids are
stored only as sha256 hashes; they are 256-bit random, so a fast hash is enough (nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tether.errors import DataError, TetherError
from tether.feedback.records import REASONS, TIE_REASON, CandidateSet, LabelledSet, Vote
from tether.inputs import os_reason

SCHEMA_VERSION = 1
SESSION_LIFETIME = timedelta(days=7)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,            -- import order
    doc_id TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL,              -- the CandidateSet as JSON, exactly as imported
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    sid_sha256 TEXT PRIMARY KEY,
    annotator_id INTEGER NOT NULL REFERENCES annotators(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    ranking TEXT NOT NULL,             -- JSON list of candidate ids, best first; [] for a tie
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (item_id, annotator_id)
);
CREATE TABLE IF NOT EXISTS skips (
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    created_at TEXT NOT NULL,
    PRIMARY KEY (item_id, annotator_id)
);
"""


_TABLES = {"items", "annotators", "sessions", "votes", "skips"}


class VoteRejected(TetherError):
    """A vote the store refuses; ``status`` is the HTTP status the web app answers with."""

    def __init__(self, message: str, status: int, hint: str | None = None):
        self.status = status
        super().__init__(message, hint=hint)


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str


@dataclass(frozen=True)
class Session:
    annotator: Annotator
    csrf: str


@dataclass(frozen=True)
class Item:
    """An imported candidate set and its row id (import order)."""

    id: int
    record: CandidateSet


@dataclass(frozen=True)
class Progress:
    labeled: int  # votes this annotator cast
    remaining: int  # items still open to them (not labeled, below the votes-per-item target)

    @property
    def total(self) -> int:
        return self.labeled + self.remaining


@dataclass(frozen=True)
class ImportSummary:
    added: int
    unchanged: int
    votes_added: int = 0
    votes_unchanged: int = 0


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LabelStore:
    """All reads and writes of the label DB. Safe to share across threads (no shared connection)."""

    def __init__(self, path: str | Path, *, create: bool = False):
        self.path = Path(path)
        hint = "pass the --db file `tether label import` created (or a new path, to create one)"
        if self.path.is_dir():
            raise DataError("is a directory; expected a label database file", where=str(self.path), hint=hint)
        existed = self.path.exists()
        if not existed:
            if not create:
                raise DataError(
                    "label database not found",
                    where=str(self.path),
                    hint="create it with: tether label import CANDIDATES.jsonl --db " + str(self.path),
                )
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataError(
                    f"cannot create the label database: {os_reason(exc)}", where=str(self.path)
                ) from None
        try:
            with self._connect() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise DataError(
                        f"label database has schema version {version}; this Tether reads up to {SCHEMA_VERSION}",
                        where=str(self.path),
                        hint="upgrade Tether",
                    )
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                foreign = sorted(tables - _TABLES)
                if version == 0 and foreign:  # someone else's database: write nothing into it
                    raise DataError(
                        f"not a label database (it holds other tables: {', '.join(foreign[:5])})",
                        where=str(self.path),
                        hint=hint,
                    )
                # journal_mode=WAL is persistent in the file; readers never block the writer.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.OperationalError as exc:  # locked, unreadable, no room: the file may be fine
            raise DataError(
                f"cannot open the label database ({exc})", where=str(self.path), hint=hint
            ) from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", a damaged file
            if not existed:
                self.path.unlink(missing_ok=True)
            raise DataError(f"not a label database ({exc})", where=str(self.path), hint=hint) from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each write's commit point is explicit.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # --- items -------------------------------------------------------------------------------

    def import_sets(self, sets: Sequence[CandidateSet]) -> ImportSummary:
        """Add candidate sets; a doc_id already present with identical content is skipped.

        All-or-nothing: a doc_id present with *different* content aborts the whole import, because
        votes already cast on the old text would silently attach to the new one.
        """
        with self._write() as conn:
            return self._import_sets(conn, sets)

    def import_labelled(self, labelled: Sequence[LabelledSet]) -> ImportSummary:
        """Add candidate sets and the votes they carry, all or nothing.

        An imported annotator gets an unusable token: its votes count in stats, agreement and export,
        but nobody can sign in as it (``add-annotator --rotate`` issues a token if one is wanted).
        A vote already stored identically is skipped; a different one by the same annotator on the
        same set aborts the import, naming the line.
        """
        added = unchanged = 0
        with self._write() as conn:
            sets = self._import_sets(conn, [item.record for item in labelled])
            for item in labelled:
                item_id = conn.execute(
                    "SELECT id FROM items WHERE doc_id = ?", (item.record.doc_id,)
                ).fetchone()[0]
                for vote in item.votes:
                    annotator_id = self._annotator_id(conn, vote.annotator)
                    row = conn.execute(
                        "SELECT ranking, reason FROM votes WHERE item_id = ? AND annotator_id = ?",
                        (item_id, annotator_id),
                    ).fetchone()
                    if row is None:
                        conn.execute(
                            "INSERT INTO votes (item_id, annotator_id, ranking, reason, created_at) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (item_id, annotator_id, json.dumps(vote.ranking), vote.reason, _now()),
                        )
                        added += 1
                    elif (json.loads(row[0]), row[1]) == (vote.ranking, vote.reason):
                        unchanged += 1
                    else:
                        raise DataError(
                            f"'{vote.annotator}' already has a different vote on doc_id "
                            f"'{item.record.doc_id}' in {self.path}",
                            where=item.where,
                            hint="import into a new --db, or give the annotator another name",
                        )
        return ImportSummary(sets.added, sets.unchanged, added, unchanged)

    def _import_sets(self, conn: sqlite3.Connection, sets: Sequence[CandidateSet]) -> ImportSummary:
        added = unchanged = 0
        for s in sets:
            record = s.model_dump_json()
            row = conn.execute("SELECT record FROM items WHERE doc_id = ?", (s.doc_id,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO items (doc_id, record, created_at) VALUES (?, ?, ?)",
                    (s.doc_id, record, _now()),
                )
                added += 1
            elif CandidateSet.model_validate_json(row[0]) == s:
                unchanged += 1
            else:
                raise DataError(
                    f"doc_id '{s.doc_id}' is already in the database with different content",
                    where=str(self.path),
                    hint="give the changed document a new doc_id, or import into a new --db",
                )
        return ImportSummary(added=added, unchanged=unchanged)

    @staticmethod
    def _annotator_id(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM annotators WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return row[0]
        cursor = conn.execute(
            "INSERT INTO annotators (name, token_sha256, created_at) VALUES (?, ?, ?)",
            (name, hash_secret(secrets.token_urlsafe(32)), _now()),
        )
        return cursor.lastrowid

    def item(self, item_id: int) -> Item | None:
        with self._connect() as conn:
            row = conn.execute("SELECT id, record FROM items WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else Item(row[0], CandidateSet.model_validate_json(row[1]))

    def items(self) -> list[Item]:
        with self._connect() as conn:
            rows = conn.execute("SELECT id, record FROM items ORDER BY id").fetchall()
        return [Item(i, CandidateSet.model_validate_json(r)) for i, r in rows]

    def count_items(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    # --- annotators and sessions -------------------------------------------------------------

    def add_annotator(self, name: str, *, rotate: bool = False) -> str:
        """Create an annotator (or, with ``rotate``, replace its token); returns the token, shown once."""
        name = name.strip()
        if not name:
            raise TetherError(
                "annotator name is empty", hint="pass a name, e.g. tether label add-annotator alice"
            )
        token = secrets.token_urlsafe(32)
        with self._write() as conn:
            row = conn.execute("SELECT id FROM annotators WHERE name = ?", (name,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO annotators (name, token_sha256, created_at) VALUES (?, ?, ?)",
                    (name, hash_secret(token), _now()),
                )
            elif rotate:
                conn.execute(
                    "UPDATE annotators SET token_sha256 = ? WHERE id = ?", (hash_secret(token), row[0])
                )
                conn.execute("DELETE FROM sessions WHERE annotator_id = ?", (row[0],))
            else:
                raise TetherError(
                    f"annotator '{name}' already exists",
                    where=str(self.path),
                    hint="pass --rotate to issue a new token (the old one stops working)",
                )
        return token

    def annotators(self) -> list[Annotator]:
        with self._connect() as conn:
            return [Annotator(i, n) for i, n in conn.execute("SELECT id, name FROM annotators ORDER BY id")]

    def authenticate(self, token: str) -> Annotator | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id, name FROM annotators WHERE token_sha256 = ?", (hash_secret(token),)
            ).fetchone()
        return None if row is None else Annotator(*row)

    def open_session(self, annotator: Annotator) -> tuple[str, str]:
        """A new session for a logged-in annotator: returns (session id for the cookie, CSRF token)."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = (datetime.now(UTC) + SESSION_LIFETIME).isoformat(timespec="seconds")
        with self._write() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (_now(),))
            conn.execute(
                "INSERT INTO sessions (sid_sha256, annotator_id, csrf, expires_at) VALUES (?, ?, ?, ?)",
                (hash_secret(sid), annotator.id, csrf, expires),
            )
        return sid, csrf

    def session(self, sid: str) -> Session | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT a.id, a.name, s.csrf FROM sessions s JOIN annotators a ON a.id = s.annotator_id "
                "WHERE s.sid_sha256 = ? AND s.expires_at > ?",
                (hash_secret(sid), _now()),
            ).fetchone()
        return None if row is None else Session(Annotator(row[0], row[1]), row[2])

    def close_session(self, sid: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM sessions WHERE sid_sha256 = ?", (hash_secret(sid),))

    # --- labeling ----------------------------------------------------------------------------

    _OPEN_ITEMS = """
        FROM items i
        LEFT JOIN (SELECT item_id, COUNT(*) AS n FROM votes GROUP BY item_id) v ON v.item_id = i.id
        WHERE i.id NOT IN (SELECT item_id FROM votes WHERE annotator_id = :a)
          AND COALESCE(v.n, 0) < :target
    """

    def next_item(self, annotator: Annotator, votes_per_item: int) -> Item | None:
        """The next item for ``annotator``: one they have not voted on and that is below the target.

        Items closest to the target come first (most votes so far), so that several annotators
        overlap on the same items early and agreement can be measured; items this annotator
        skipped come after all others; ties go by import order.
        """
        with self._connect() as conn:
            row = conn.execute(
                "SELECT i.id, i.record "
                + self._OPEN_ITEMS
                + """ ORDER BY (i.id IN (SELECT item_id FROM skips WHERE annotator_id = :a)),
                           COALESCE(v.n, 0) DESC, i.id
                    LIMIT 1""",
                {"a": annotator.id, "target": votes_per_item},
            ).fetchone()
        return None if row is None else Item(row[0], CandidateSet.model_validate_json(row[1]))

    def progress(self, annotator: Annotator, votes_per_item: int) -> Progress:
        with self._connect() as conn:
            labeled = conn.execute(
                "SELECT COUNT(*) FROM votes WHERE annotator_id = ?", (annotator.id,)
            ).fetchone()[0]
            remaining = conn.execute(
                "SELECT COUNT(*) " + self._OPEN_ITEMS, {"a": annotator.id, "target": votes_per_item}
            ).fetchone()[0]
        return Progress(labeled=labeled, remaining=remaining)

    def record_vote(self, annotator: Annotator, item_id: int, ranking: Sequence[str], reason: str) -> Vote:
        """Validate and commit one vote; raises VoteRejected (nothing written) if it is not acceptable.

        A tie (reason ``both_fine``) has an empty ranking; any other vote ranks every candidate once.
        """
        if reason not in REASONS:
            raise VoteRejected(f"unknown reason '{reason}'", 422, hint=f"one of: {', '.join(REASONS)}")
        ranking = tuple(ranking)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM annotators WHERE id = ?", (annotator.id,)).fetchone() is None:
                raise VoteRejected("unknown annotator", 401)
            row = conn.execute("SELECT record FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise VoteRejected(f"no item with id {item_id}", 404)
            record = CandidateSet.model_validate_json(row[0])
            ids = sorted(c.id for c in record.candidates)
            if reason == TIE_REASON:
                if ranking:
                    raise VoteRejected("a 'both fine' vote carries no ranking", 422)
            elif sorted(ranking) != ids:
                raise VoteRejected(
                    f"the ranking must list each candidate exactly once; got {list(ranking)}",
                    422,
                    hint=f"ids: {ids}",
                )
            exists = conn.execute(
                "SELECT 1 FROM votes WHERE item_id = ? AND annotator_id = ?", (item_id, annotator.id)
            ).fetchone()
            if exists:
                raise VoteRejected("you already labeled this item", 409)
            created = _now()
            conn.execute(
                "INSERT INTO votes (item_id, annotator_id, ranking, reason, created_at) VALUES (?, ?, ?, ?, ?)",
                (item_id, annotator.id, json.dumps(list(ranking)), reason, created),
            )
        return Vote(record.doc_id, annotator.name, ranking, reason, created)

    def record_skip(self, annotator: Annotator, item_id: int) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone() is None:
                raise VoteRejected(f"no item with id {item_id}", 404)
            conn.execute(
                "INSERT OR IGNORE INTO skips (item_id, annotator_id, created_at) VALUES (?, ?, ?)",
                (item_id, annotator.id, _now()),
            )

    # --- reading votes -----------------------------------------------------------------------

    def votes(self) -> list[Vote]:
        """All votes, by item import order then time cast."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT i.doc_id, a.name, v.ranking, v.reason, v.created_at FROM votes v "
                "JOIN items i ON i.id = v.item_id JOIN annotators a ON a.id = v.annotator_id "
                "ORDER BY i.id, v.id"
            ).fetchall()
        return [Vote(d, a, tuple(json.loads(r)), reason, t) for d, a, r, reason, t in rows]

    def skip_counts(self) -> dict[str, int]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT a.name, COUNT(s.item_id) FROM annotators a LEFT JOIN skips s ON s.annotator_id = a.id "
                "GROUP BY a.id ORDER BY a.id"
            ).fetchall()
        return dict(rows)
