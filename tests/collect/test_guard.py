"""A team deployment's hardening: bodies capped before auth, ids bounded, failed logins limited, the admin token
kept off the command line and out of the log, annotators managed and data exported from /admin."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from labelling import CLI, candidates, make_db
from servers import free_port

from collect.app import AppConfig, create_app
from collect.strategies import Picker

ADMIN = "admin-secret-of-this-test"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def send_huge(port: int, chunked: bool, total: int = 1 << 30) -> tuple[str, int]:
    """POST `total` bytes with no token, declared or chunked; (status line, bytes the server took before answering)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    sock.sendall(f"POST /api/answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length}\r\n\r\n".encode())
    chunk = b"x" * (1 << 20)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
    sent = 0
    pending = memoryview(framed)  # what is left of the current frame (a send may take only part of it)
    sock.setblocking(False)
    answer = b""
    while sent < total and b"\r\n" not in answer:
        try:
            n = sock.send(pending)
            sent += n
            pending = pending[n:] if n < len(pending) else memoryview(framed)
        except BlockingIOError:
            time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            break
        with contextlib.suppress(BlockingIOError):
            answer += sock.recv(65536)
    sock.settimeout(10)
    try:
        while b"\r\n\r\n" not in answer and (more := sock.recv(65536)):
            answer += more
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return answer.split(b"\r\n")[0].decode(), sent


def test_a_gigabyte_without_a_token_is_refused_before_it_is_read(tmp_path: Path) -> None:
    db = tmp_path / "labels.sqlite"
    make_db(db, candidates(2, 2), ["ann"])
    port = free_port()
    env = {**os.environ, "COLLECT_ADMIN_TOKEN": ADMIN}
    cmd = [*CLI, "serve", "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        before = peak_rss_mb(proc.pid)
        declared = send_huge(port, chunked=False)
        streamed = send_huge(port, chunked=True)
        after = peak_rss_mb(proc.pid)
        print(
            f"1 GiB unauthenticated: declared {declared}, streamed {streamed}; peak RSS {before:.0f} -> {after:.0f} MB"
        )
        assert declared[0].startswith("HTTP/1.1 413") and streamed[0].startswith("HTTP/1.1 413")
        assert streamed[1] < 64 << 20  # refused after the limit, not after the gigabyte
        assert after - before < 50
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_ids_are_bounded_and_failed_logins_are_limited(tmp_path: Path) -> None:
    db = tmp_path / "labels.sqlite"
    tokens = make_db(db, candidates(2, 2), ["ann"])
    with TestClient(create_app(AppConfig(db, 2, ADMIN, Picker("random", None, seed=0)))) as http:
        for bad in (2**70, -1, 0):
            r = http.post("/api/answer", json={"assignment_id": bad, "choice": "A"}, headers=auth(tokens["ann"]))
            assert r.status_code == 422 and r.json()["error"].startswith("assignment_id"), r.text
        for i in range(20):
            assert http.get("/api/next", headers=auth(f"guess-{i}")).status_code == 401
        limited = http.get("/api/next", headers=auth(tokens["ann"]))  # same address: waits like everyone there
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "too many failed logins" in limited.json()["error"]


def test_the_admin_token_never_reaches_the_log_or_the_command_line(tmp_path: Path) -> None:
    db = tmp_path / "labels.sqlite"
    make_db(db, candidates(1, 2), [])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "COLLECT_ADMIN_TOKEN"}
    proc = subprocess.Popen(
        [*CLI, "serve", "--db", str(db), "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    token_file = Path(f"{db}.admin-token")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not token_file.exists():
            time.sleep(0.05)
        time.sleep(0.5)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        for _ in range(100):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/admin/stats", headers=auth(token))
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert token not in err and str(token_file) in err
    token_file.chmod(0o644)  # someone widened it: refuse, with the fix in one line
    bad = subprocess.run([*CLI, "serve", "--db", str(db), "--port", str(port)], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "chmod 600" in bad.stderr and "Traceback" not in bad.stderr


def test_annotators_are_managed_and_labels_exported_from_admin(tmp_path: Path) -> None:
    db = tmp_path / "labels.sqlite"
    make_db(db, candidates(1, 2), [])
    with TestClient(create_app(AppConfig(db, 1, ADMIN, Picker("random", None, seed=0)))) as http:
        made = http.post("/api/admin/annotators", json={"name": "新人"}, headers=auth(ADMIN)).json()
        assert http.post("/api/admin/annotators", json={"name": "新人"}, headers=auth(ADMIN)).status_code == 409
        shown = http.get("/api/next", headers=auth(made["token"])).json()
        body = {"assignment_id": shown["pair"]["assignment_id"], "choice": "A", "reason": "更准确"}
        assert http.post("/api/answer", json=body, headers=auth(made["token"])).status_code == 200
        votes = http.get("/api/admin/export?format=votes", headers=auth(ADMIN))
        assert votes.headers["content-disposition"] == 'attachment; filename="preferences-votes.jsonl"'
        assert json.loads(votes.text)["reason"] == "更准确" and votes.headers["x-export-records"] == "1"
        tutorial = http.get("/api/admin/export?format=tutorial", headers=auth(ADMIN))
        assert set(json.loads(tutorial.text)[0]) == {"question", "chosen", "rejected"}
        assert http.get("/api/admin/export?format=csv", headers=auth(ADMIN)).status_code == 422
        assert http.get("/api/admin/export", headers=auth(made["token"])).status_code == 403
        assert http.delete("/api/admin/annotators/新人", headers=auth(ADMIN)).json() == {
            "name": "新人",
            "revoked": True,
        }
        assert http.get("/api/next", headers=auth(made["token"])).status_code == 401
        listed = http.get("/api/admin/annotators", headers=auth(ADMIN)).json()["annotators"]
        assert [(a["name"], a["revoked"]) for a in listed] == [("新人", True)]
        assert http.delete("/api/admin/annotators/nobody", headers=auth(ADMIN)).status_code == 404
        stats = http.get("/api/admin/stats", headers=auth(ADMIN)).json()
        assert stats["annotators"][0]["median_seconds_per_pair"] >= 0 and stats["disputes"]["split_at_first"] == 0
