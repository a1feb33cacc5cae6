"""The annotation app over HTTP: tokens, admin token, security headers, answer/undo, strategies on the live service."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from labelling import candidates, make_db
from servers import LiveServer

from collect.app import AppConfig, create_app
from collect.candidates import Candidates
from collect.db import connect
from collect.store import Location
from collect.strategies import ModelScores, Picker


def client_for(db: Location, picker: Picker, per_item: int = 2) -> TestClient:
    return TestClient(create_app(AppConfig(db, per_item, "admin-secret", picker)))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_headers_answer_undo_and_admin(engine: Location) -> None:
    db = engine
    tokens = make_db(db, candidates(2, 2), ["ann", "bob"])
    with client_for(db, Picker("random", None, seed=0)) as http:
        page = http.get("/")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert http.get("/static/app.js").headers["content-type"].startswith("text/javascript")
        assert http.get("/static/../db.py").status_code == 404
        assert http.get("/api/next").json() == {"error": "missing token: send 'Authorization: Bearer TOKEN'"}
        assert http.get("/api/next", headers=auth("forged")).status_code == 401
        shown = http.get("/api/next", headers=auth(tokens["ann"])).json()
        assert shown["done"] is False and shown["name"] == "ann" and shown["progress"]["answers_needed"] == 4
        body = {"assignment_id": shown["pair"]["assignment_id"], "choice": "B", "reason": " more complete "}
        assert http.post("/api/answer", json=body, headers=auth(tokens["bob"])).status_code == 404  # not bob's
        assert http.post("/api/answer", json={**body, "choice": "C"}, headers=auth(tokens["ann"])).status_code == 422
        ok = http.post("/api/answer", json=body, headers=auth(tokens["ann"]))
        assert ok.status_code == 200 and ok.json()["ok"] is True
        again = http.get("/api/next", headers=auth(tokens["ann"])).json()
        assert again["counts"]["answered"] == 1 and again["progress"]["answers_done"] == 1
        assert http.post("/api/undo", headers=auth(tokens["ann"])).status_code == 200
        back = http.get("/api/next", headers=auth(tokens["ann"])).json()
        assert back["pair"] == shown["pair"] and back["counts"]["undone"] == 1
        assert http.get("/api/admin/stats", headers=auth(tokens["ann"])).status_code == 403  # annotators are not admins
        stats = http.get("/api/admin/stats", headers=auth("admin-secret")).json()
        assert stats["progress"]["items"] == 2 and stats["strategy"] == {"strategy": "random", "degraded": None}
        assert {a["name"] for a in stats["annotators"]} == {"ann", "bob"}
    reason = connect(db).execute("SELECT reason FROM answers").fetchone()[0]
    assert reason == "more complete"


def gaps(db: Location, picker: Picker, scores: ModelScores) -> list[float]:
    """|reward(first) − reward(second)| of the pairs in the order the picker ranks them."""
    conn = connect(db)
    rows = conn.execute("SELECT id, prompt_id, first_id, second_id FROM items").fetchall()
    order = picker(rows)
    reward = scores.for_items(rows)
    by_id = {r["id"]: r for r in rows}
    return [abs(reward[by_id[i]["first_id"]] - reward[by_id[i]["second_id"]]) for i in order]


def test_uncertain_and_max_gap_order_by_the_live_models_rewards(engine: Location, reward_service: LiveServer) -> None:
    db = engine
    found = Candidates()
    found.add("tell me about tea", ["tea is kind clear great.", "tea is awful rude.", "tea is glad.", "tea is junk."])
    found.add("tell me about maps", ["maps is helpful.", "maps is lazy wrong hate.", "maps is sure careful."])
    make_db(db, found, ["ann"])
    scores = ModelScores(reward_service.url, lambda: connect(db))
    uncertain = gaps(db, Picker("uncertain", scores, seed=0), scores)
    assert uncertain == sorted(uncertain) and len(uncertain) == 9
    max_gap = gaps(db, Picker("max-gap", scores, seed=0), scores)
    assert max_gap == sorted(max_gap, reverse=True)
    cached = connect(db).execute("SELECT COUNT(*), COUNT(DISTINCT model) FROM scores").fetchone()
    assert tuple(cached) == (7, 1)  # one /compare per prompt, cached under the live model's id


def test_unreachable_service_falls_back_to_random_with_a_warning(
    engine: Location, caplog: pytest.LogCaptureFixture
) -> None:
    db = engine
    tokens = make_db(db, candidates(3, 2), ["ann"])
    picker = Picker("uncertain", ModelScores("http://127.0.0.1:9", lambda: connect(db)))
    with client_for(db, picker) as http, caplog.at_level("WARNING"):
        shown = http.get("/api/next", headers=auth(tokens["ann"]))
        assert shown.status_code == 200 and shown.json()["done"] is False
        status = http.get("/api/admin/stats", headers=auth("admin-secret")).json()["strategy"]
    assert status["strategy"] == "uncertain"
    assert "cannot reach the reward service at http://127.0.0.1:9" in status["degraded"]
    assert any("random order until it answers" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="needs --reward-url"):
        Picker("max-gap", None)
