"""Helpers for the collect tests: tiny causal LMs, labels databases with annotators, the CLI, the shared data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from collect.candidates import Candidates
from collect.db import add_annotator, connect, import_candidates, open_db
from collect.queue import Queue
from collect.store import Location

CLI = [sys.executable, "-m", "collect"]
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "preferences"


def candidates(prompts: int, per_prompt: int) -> Candidates:
    found = Candidates()
    for p in range(prompts):
        found.add(f"prompt {p}", [f"answer {p}.{c}" for c in range(per_prompt)])
    return found


def make_db(path: Location, found: Candidates, annotators: list[str]) -> dict[str, str]:
    """A labels database holding `found`, and a token per annotator name."""
    conn = open_db(path)
    try:
        import_candidates(conn, found)
        return {name: add_annotator(conn, name) for name in annotators}
    finally:
        conn.close()


def make_queue(path: Location, per_item: int, lease_seconds: float = 600.0) -> Queue:
    return Queue(lambda: connect(path), per_item, lease_seconds)


def ids_of(path: Location) -> dict[str, int]:
    conn = connect(path)
    try:
        return {r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM annotators")}
    finally:
        conn.close()


ADMIN = "admin-token-of-the-tests"


def start_server(db: Location, port: int, per_item: int, *extra: str) -> subprocess.Popen[str]:
    """`python -m collect serve` on a loopback port (admin token ADMIN, from the environment), once it answers
    /healthz."""
    cmd = [*CLI, "serve", "--db", str(db), "--port", str(port), "--annotations-per-item", str(per_item), *extra]
    env = {**os.environ, "COLLECT_ADMIN_TOKEN": ADMIN}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"collect serve did not start: {proc.communicate()[0]}")
