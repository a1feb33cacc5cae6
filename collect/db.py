"""The labels database: SQLite schema (WAL, synchronous=FULL), connections, candidate import and annotator tokens."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .candidates import Candidates

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, token_hash TEXT UNIQUE NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (id INTEGER PRIMARY KEY, text TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS completions (
    id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts(id), text TEXT NOT NULL,
    UNIQUE (prompt_id, text));
-- An item is one pair of completions of one prompt; first_id < second_id fixes its canonical orientation.
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    first_id INTEGER NOT NULL REFERENCES completions(id), second_id INTEGER NOT NULL REFERENCES completions(id),
    UNIQUE (first_id, second_id), CHECK (first_id < second_id));
-- One row per (item, annotator), ever: an item is never shown twice to one person. a_is_first records the
-- randomised sides of this showing; state is open (leased), answered, skipped or expired (lease lapsed).
CREATE TABLE IF NOT EXISTS assignments (
    id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id), a_is_first INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'answered', 'skipped', 'expired')), issued REAL NOT NULL,
    UNIQUE (item_id, annotator_id));
CREATE INDEX IF NOT EXISTS assignments_by_annotator ON assignments (annotator_id, state);
-- Answers are never deleted: undo stamps `undone`, so the audit trail keeps every click.
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY, assignment_id INTEGER NOT NULL REFERENCES assignments(id),
    item_id INTEGER NOT NULL REFERENCES items(id), annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie', 'skip')), a_is_first INTEGER NOT NULL,
    winner TEXT CHECK (winner IN ('first', 'second', 'tie')), reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, undone REAL);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_answer ON answers (assignment_id) WHERE undone IS NULL;
CREATE INDEX IF NOT EXISTS answers_by_item ON answers (item_id);
-- Rewards from the live service, per model, for the `uncertain` and `max-gap` strategies.
CREATE TABLE IF NOT EXISTS scores (
    completion_id INTEGER NOT NULL REFERENCES completions(id), model TEXT NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (completion_id, model));
"""


class StoreError(ValueError):
    """A database that cannot be used, or an operator action that cannot be done; one line."""


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit: `with transaction(conn)`).

    synchronous=FULL: with WAL, NORMAL already survives a killed process (the OS keeps the written pages), but
    FULL also fsyncs the log at every commit, so an answer acknowledged to a browser survives power loss too.
    Annotation writes are a few per second, so the fsync costs nothing that matters.
    """
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE takes the write lock up front, so concurrent claims of one item serialise."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_db(path: Path) -> sqlite3.Connection:
    """Create or open the labels database, in WAL mode, with the schema in place."""
    if path.exists() and path.is_dir():
        raise StoreError(f"{path}: is a folder, not a database file")
    try:
        conn = connect(path)
        conn.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer
        conn.executescript(SCHEMA)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not a usable SQLite database: {e}") from None
    return conn


def import_candidates(conn: sqlite3.Connection, candidates: Candidates) -> tuple[int, int]:
    """Add prompts, completions and every pair as an item; already-known ones are kept. (new prompts, new items)."""
    new_prompts = new_items = 0
    with transaction(conn):
        for prompt, texts in candidates.completions.items():
            cur = conn.execute("INSERT OR IGNORE INTO prompts (text) VALUES (?)", (prompt,))
            new_prompts += cur.rowcount
            prompt_id = conn.execute("SELECT id FROM prompts WHERE text = ?", (prompt,)).fetchone()[0]
            for text in texts:
                conn.execute("INSERT OR IGNORE INTO completions (prompt_id, text) VALUES (?, ?)", (prompt_id, text))
            found = conn.execute("SELECT id FROM completions WHERE prompt_id = ? ORDER BY id", (prompt_id,))
            ids = [r[0] for r in found]
            for i, first in enumerate(ids):
                for second in ids[i + 1 :]:
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO items (prompt_id, first_id, second_id) VALUES (?, ?, ?)",
                        (prompt_id, first, second),
                    )
                    new_items += cur.rowcount
    return new_prompts, new_items


def hash_token(token: str) -> str:
    # Tokens are 32 random bytes, so a plain SHA-256 cannot be brute-forced; a slow hash would buy nothing.
    return hashlib.sha256(token.encode()).hexdigest()


def add_annotator(conn: sqlite3.Connection, name: str, rotate: bool = False) -> str:
    """Issue a token for NAME (only its hash is stored) and return it; `rotate` replaces an existing one."""
    name = name.strip()
    if not name or len(name) > 64 or any(not ch.isprintable() for ch in name):
        raise StoreError(f"annotator name must be 1-64 printable characters, got {name!r}")
    token = secrets.token_urlsafe(32)
    with transaction(conn):
        known = conn.execute("SELECT id FROM annotators WHERE name = ?", (name,)).fetchone()
        if known and not rotate:
            raise StoreError(f"annotator {name!r} already exists (pass --rotate to issue a new token)")
        if known:
            conn.execute("UPDATE annotators SET token_hash = ? WHERE id = ?", (hash_token(token), known[0]))
        else:
            conn.execute(
                "INSERT INTO annotators (name, token_hash, created) VALUES (?, ?, ?)",
                (name, hash_token(token), time.time()),
            )
    return token


def annotator_for(conn: sqlite3.Connection, token: str) -> tuple[int, str] | None:
    row = conn.execute("SELECT id, name FROM annotators WHERE token_hash = ?", (hash_token(token),)).fetchone()
    return (int(row[0]), str(row[1])) if row else None
