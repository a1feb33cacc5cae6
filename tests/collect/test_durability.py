"""An acknowledged answer is never lost: SIGKILL the server during a burst from concurrent annotators, then count."""

from __future__ import annotations

import random
import signal
import threading
import time

import httpx
from labelling import candidates, make_db, start_server
from servers import free_port

from collect.db import connect
from collect.store import Location, is_url

ANNOTATORS = 6


def test_sigkill_mid_burst_loses_no_acknowledged_answer(engine: Location) -> None:
    db = engine
    tokens = make_db(db, candidates(40, 4), [f"ann{i}" for i in range(ANNOTATORS)])  # 240 pairs, 720 slots
    port = free_port()
    proc = start_server(db, port, per_item=3)
    acked: list[tuple[str, int, str, int]] = []  # (annotator, assignment, choice, answer id) answered 200
    stop = threading.Event()

    def annotate(name: str, token: str) -> None:
        rng = random.Random(name)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as http:
            while not stop.is_set():
                try:
                    shown = http.get("/api/next").json()
                    if shown["done"]:
                        return
                    body = {"assignment_id": shown["pair"]["assignment_id"], "choice": rng.choice("AB")}
                    response = http.post("/api/answer", json={**body, "reason": f"{name} says so"})
                except (httpx.TransportError, ValueError):
                    return  # the server died under us: whatever was in flight was never acknowledged
                if response.status_code == 200:
                    acked.append((name, body["assignment_id"], body["choice"], response.json()["answer_id"]))

    threads = [threading.Thread(target=annotate, args=item) for item in tokens.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # mid-burst: every thread has a request in flight or about to be
    proc.wait(10)
    stop.set()
    for t in threads:
        t.join(15)
    assert proc.returncode == -signal.SIGKILL and len(acked) >= 200

    conn = connect(db)
    stored = {
        r["id"]: (r["name"], r["assignment_id"], r["choice"])
        for r in conn.execute(
            "SELECT a.id, n.name, a.assignment_id, a.choice FROM answers a "
            "JOIN annotators n ON n.id = a.annotator_id WHERE a.undone IS NULL"
        )
    }
    lost = [a for a in acked if stored.get(a[3]) != a[:3]]
    kind = "postgresql" if is_url(db) else "sqlite"
    print(f"\nSIGKILL test ({kind}): {len(acked)} answers acknowledged, {len(stored)} stored, {len(lost)} lost")
    assert not lost
    assert len(stored) >= len(acked)  # stored - acked: committed, the server died before answering
    over = conn.execute("SELECT item_id, COUNT(*) FROM answers GROUP BY item_id HAVING COUNT(*) > 3").fetchall()
    assert not over  # concurrency never pushed a pair past --annotations-per-item
    if not is_url(db):
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
