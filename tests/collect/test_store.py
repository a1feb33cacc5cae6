"""The storage layer: one SQL text for both engines, rows by index and name, serialised writers, durable answers,
locations and their passwords, and one-line CLI errors for a PostgreSQL that cannot be reached."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from labelling import CLI, candidates, make_db
from pg import Cluster
from servers import free_port

from collect.app import AppConfig, create_app
from collect.db import StoreError, connect, open_db, transaction
from collect.store import Location, is_url, parse_location, redact, to_pyformat
from collect.strategies import Picker


def test_placeholders_become_pyformat_outside_literals_casts_and_comments() -> None:
    assert to_pyformat("SELECT a FROM t WHERE b = ? AND c = ?") == "SELECT a FROM t WHERE b = %s AND c = %s"
    assert (
        to_pyformat("SELECT :k, x::text FROM t WHERE y > :cut_off")
        == "SELECT %(k)s, x::text FROM t WHERE y > %(cut_off)s"
    )
    literal = "SELECT 'a ? :b %', \"odd ? name\" FROM t WHERE k LIKE 'quorum.%' AND v = ? -- what? :no"
    assert to_pyformat(literal) == (
        "SELECT 'a ? :b %%', \"odd ? name\" FROM t WHERE k LIKE 'quorum.%%' AND v = %s -- what? :no"
    )
    assert to_pyformat("SELECT 'it''s ?' || ? /* why? :x */") == "SELECT 'it''s ?' || %s /* why? :x */"
    with pytest.raises(ValueError, match="mixed"):
        to_pyformat("SELECT ?, :a")


def test_locations_and_passwords_in_messages() -> None:
    assert parse_location("labels.sqlite") == parse_location("./labels.sqlite")
    assert is_url(parse_location("postgresql://u@h/db")) and is_url("postgres://h/db")
    assert not is_url(parse_location("postgresql.sqlite"))
    assert redact("postgresql://ann:s3cret@db.example:5433/labels") == "postgresql://ann:***@db.example:5433/labels"
    assert "s3cret" not in redact("postgres://db/labels?sslmode=require&password=s3cret")
    assert redact("postgresql://ann@db/labels") == "postgresql://ann@db/labels"


def test_rows_and_cursors_behave_alike_on_both_engines(engine: Location) -> None:
    make_db(engine, candidates(2, 3), ["ann", "bob"])
    conn = connect(engine)
    try:
        row = conn.execute("SELECT id, name, created FROM annotators WHERE name = :n", {"n": "bob"}).fetchone()
        assert row[1] == row["name"] == "bob" and list(dict(row)) == ["id", "name", "created"] == row.keys()
        assert tuple(conn.execute("SELECT COUNT(*), COUNT(DISTINCT prompt_id) FROM items").fetchone()) == (6, 2)
        assert [r["name"] for r in conn.execute("SELECT name FROM annotators ORDER BY name")] == ["ann", "bob"]
        cur = conn.execute("INSERT INTO prompts (text) VALUES (?) ON CONFLICT DO NOTHING RETURNING id", ("new",))
        assert int(cur.fetchone()[0]) == 3
        assert conn.execute("INSERT INTO prompts (text) VALUES (?) ON CONFLICT DO NOTHING", ("new",)).rowcount == 0
        with pytest.raises(ZeroDivisionError), transaction(conn):
            conn.execute("UPDATE annotators SET name = 'eve' WHERE name = 'ann'")
            raise ZeroDivisionError
        assert conn.execute("SELECT COUNT(*) FROM annotators WHERE name = 'eve'").fetchone()[0] == 0  # rolled back
    finally:
        conn.close()


def test_writers_queue_behind_one_lock_and_see_each_others_commits(engine: Location) -> None:
    """Read-modify-write of one counter from 8 threads: without BEGIN IMMEDIATE / the advisory lock, updates
    computed from a stale read would be lost."""
    open_db(engine).close()
    conn = connect(engine)
    conn.execute("INSERT INTO meta (key, value) VALUES ('n', '0')")
    conn.close()

    def bump() -> None:
        mine = connect(engine)
        try:
            for _ in range(15):
                with transaction(mine):
                    n = int(mine.execute("SELECT value FROM meta WHERE key = 'n'").fetchone()[0])
                    time.sleep(0.001)
                    mine.execute("UPDATE meta SET value = ? WHERE key = 'n'", (str(n + 1),))
        finally:
            mine.close()

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conn = connect(engine)
    assert conn.execute("SELECT value FROM meta WHERE key = 'n'").fetchone()[0] == "120"
    conn.close()


def test_unreachable_postgresql_is_one_line_without_the_password(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://ann:s3cret@127.0.0.1:{free_port()}/labels?connect_timeout=3"
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as e:
        open_db(url)
    assert "s3cret" not in str(e.value) and "\n" not in str(e.value)
    env = {**os.environ, "COLLECT_DATABASE_URL": url}
    for argv in (["add-annotator", "ann"], ["serve", "--port", str(free_port())], ["export", "--out", "p.json"]):
        result = subprocess.run([*CLI, *argv], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot connect to PostgreSQL" in lines[0] and "s3cret" not in result.stderr


def test_the_database_url_from_the_environment_is_the_default(engine: Location, tmp_path: Path) -> None:
    env = {**os.environ, "COLLECT_DATABASE_URL": str(engine)}
    issued = subprocess.run([*CLI, "add-annotator", "ann"], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert issued.returncode == 0, issued.stderr
    conn = connect(engine)
    assert [r["name"] for r in conn.execute("SELECT name FROM annotators")] == ["ann"]
    conn.close()
    env.pop("COLLECT_DATABASE_URL")
    missing = subprocess.run([*CLI, "add-annotator", "bob"], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "--db" in missing.stderr


def test_a_postgresql_gone_away_is_503_with_retry_after_then_recovers(postgres: Cluster) -> None:
    import psycopg

    url = postgres.create_database()
    name = url.rsplit("/", 1)[1]
    token = make_db(url, candidates(2, 2), ["ann"])["ann"]
    auth = {"Authorization": f"Bearer {token}"}
    with (
        TestClient(create_app(AppConfig(url, 1, "admin-secret", Picker("random", None)))) as http,
        psycopg.connect(postgres.url("postgres"), autocommit=True) as admin,
    ):
        assert http.get("/api/next", headers=auth).status_code == 200
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        for _ in range(2):  # a pooled connection that was cut, then a new one that is refused
            gone = http.get("/api/next", headers=auth)
            assert gone.status_code == 503 and gone.headers["retry-after"] == "1", gone.text
            assert gone.json()["error"].startswith("database busy, try again")
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        assert http.get("/api/next", headers=auth).json()["done"] is False
