"""Where the labels live: SQLite (a path, the embedded default) or PostgreSQL (a URL), behind one connection API."""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ImportError:  # PostgreSQL is optional: `pip install rlhf-reward[collect]`
    psycopg = None  # type: ignore[assignment]

Location = Path | str  # a SQLite file, or a postgresql:// URL (kept as a string)
Params = Sequence[Any] | Mapping[str, Any]
URL_SCHEMES = ("postgresql://", "postgres://")
WRITE_LOCK = 0x636F6C6C656374  # "collect": the advisory lock every PostgreSQL write transaction takes first
# Errors that mean "the database is busy or away for now, try again" (the app answers 503 with Retry-After).
BUSY_ERRORS: tuple[type[Exception], ...] = (sqlite3.OperationalError,) + (
    (psycopg.OperationalError,) if psycopg is not None else ()
)


class Row(Protocol):
    """A result row, readable by index and by column name (sqlite3.Row, or PgRow on PostgreSQL)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


def is_url(location: Location) -> bool:
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def parse_location(text: str) -> Location:
    """`--db` / COLLECT_DATABASE_URL: a postgresql:// or postgres:// URL stays a string, anything else is a path."""
    return text if text.startswith(URL_SCHEMES) else Path(text)


def redact(location: Location) -> str:
    """The location for messages: a URL's password (in the user part or a `password=` parameter) is hidden."""
    if not is_url(location):
        return str(location)
    parts = urlsplit(str(location))
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*/"), parts.fragment))


# A string literal, a quoted name, a comment, a cast, a named or positional placeholder, or a percent sign. (So the
# SQL written for both engines never uses PostgreSQL's `?` JSON operators: their functions, jsonb_exists..., do.)
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*[\s\S]*?\*/|::|:[A-Za-z_]\w*|\?|%")


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """SQLite's `?` and `:name` placeholders as psycopg's `%s` and `%(name)s`; `::` casts and literal text are kept
    (a `%` anywhere is doubled: psycopg reads placeholders in literals too)."""
    kinds = set()

    def swap(m: re.Match[str]) -> str:
        token = m.group()
        if token == "?":
            kinds.add("?")
            return "%s"
        if token.startswith(":") and token != "::":
            kinds.add(":")
            return f"%({token[1:]})s"
        return token.replace("%", "%%")

    out = _TOKEN.sub(swap, sql)
    if len(kinds) > 1:
        raise ValueError(f"mixed ? and :name placeholders in {sql!r}")
    return out


class PgRow(tuple[Any, ...]):
    """A PostgreSQL row that, like sqlite3.Row, answers row[0], row["name"], keys() and dict(row)."""

    __slots__ = ()
    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self.names[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self.names)


def _pg_rows(cursor: Any) -> Any:
    names: dict[str, int] = {}
    for i, column in enumerate(cursor.description or []):
        names.setdefault(column.name, i)  # like sqlite3.Row: of two equal names, the first
    return type("PgRow", (PgRow,), {"names": names, "__slots__": ()})


class Connection:
    """One connection in autocommit mode; `with transaction(conn)` is the only way to group writes."""

    dialect = ""

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        raise NotImplementedError

    def executescript(self, sql: str) -> None:
        """Several statements, no parameters (the schema)."""
        raise NotImplementedError

    def begin(self) -> None:
        """Start a write transaction holding the database's one write lock (writers queue, readers never wait)."""
        raise NotImplementedError

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    def close(self) -> None:
        raise NotImplementedError


class SqliteConnection(Connection):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        """synchronous=FULL: with WAL, NORMAL already survives a killed process (the OS keeps the written pages),
        but FULL also fsyncs the log at every commit, so an answer acknowledged to a browser survives power loss
        too. Annotation writes are a few per second, so the fsync costs nothing that matters."""
        self.raw = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.raw.row_factory = sqlite3.Row
        self.raw.execute("PRAGMA synchronous=FULL")
        self.raw.execute("PRAGMA foreign_keys=ON")
        self.raw.execute("PRAGMA busy_timeout=30000")

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self.raw.executemany(sql, rows)

    def executescript(self, sql: str) -> None:
        self.raw.executescript(sql)

    def begin(self) -> None:
        self.raw.execute("BEGIN IMMEDIATE")  # takes the write lock up front, so concurrent claims serialise

    def close(self) -> None:
        self.raw.close()


# Connections ready for reuse, (URL, psycopg connection, idle since), oldest first: a request opens two or three,
# and a new PostgreSQL connection is a new server process. One idle for long may have been cut (a firewall, the
# server's idle_session_timeout), so it is not reused but closed.
_idle: list[tuple[str, Any, float]] = []
_idle_lock = threading.Lock()
MAX_IDLE = 16  # per process, all URLs together: a server keeps its busiest few, tests do not pile up
MAX_IDLE_SECONDS = 60.0


def close_idle() -> None:
    """Close every pooled PostgreSQL connection of this process."""
    with _idle_lock:
        found = [raw for _, raw, _ in _idle]
        _idle.clear()
    for raw in found:
        raw.close()


def _pg_connect(url: str) -> Any:
    """A new connection: durable commits whatever the server's default, a 30 s lock wait like SQLite's busy timeout,
    and a 10 s connect timeout unless the URL sets one."""
    if psycopg is None:
        raise ModuleNotFoundError("a postgresql:// database needs psycopg: pip install 'rlhf-reward[collect]'")
    given = conninfo_to_dict(url)
    options = " ".join(filter(None, [str(given.get("options") or ""), "-c synchronous_commit=on -c lock_timeout=30s"]))
    timeout = given.get("connect_timeout", 10)
    return psycopg.connect(
        url, autocommit=True, row_factory=_pg_rows, options=options, connect_timeout=timeout, application_name="collect"
    )


class PgConnection(Connection):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        raw, stale, now = None, [], time.monotonic()
        with _idle_lock:
            while _idle and now - _idle[0][2] > MAX_IDLE_SECONDS:
                stale.append(_idle.pop(0)[1])
            pooled = next((i for i in range(len(_idle) - 1, -1, -1) if _idle[i][0] == url), None)
            if pooled is not None:
                raw = _idle.pop(pooled)[1]
        for old in stale:
            old.close()
        self.raw = raw if raw is not None else _pg_connect(url)

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        cursor: Cursor = self.raw.execute(to_pyformat(sql), params)
        return cursor

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(to_pyformat(sql), rows)

    def executescript(self, sql: str) -> None:
        self.raw.execute(sql)  # no parameters: the simple protocol, which runs several statements

    def begin(self) -> None:
        # BEGIN IMMEDIATE's counterpart: one transaction-scoped advisory lock serialises the writers, and every
        # statement after it (READ COMMITTED) sees what the writers before committed.
        self.raw.execute("BEGIN")
        try:
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        with suppress(Exception):  # a broken connection has nothing to roll back; the original error matters
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        raw, self.raw = self.raw, None
        if raw is None or raw.closed:
            return
        if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raw.close()  # mid-transaction or broken: never hand it to someone else
            return
        with _idle_lock:
            _idle.append((self.url, raw, time.monotonic()))
            evicted = _idle.pop(0)[1] if len(_idle) > MAX_IDLE else None
        if evicted is not None:
            evicted.close()


def connect(location: Location) -> Connection:
    """A connection in autocommit mode (transactions are explicit: `with transaction(conn)`)."""
    if is_url(location):
        return PgConnection(str(location))
    return SqliteConnection(Path(location))


@contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """The write lock is taken up front (BEGIN IMMEDIATE / advisory lock), so concurrent claims of one item
    serialise; the block's writes commit together when it ends, or roll back on any exception."""
    conn.begin()
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
