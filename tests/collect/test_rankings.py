"""Ranking screens: 3-4 answers ranked at once, stored as the pairs they imply, undone whole, exported as rankings
and as pairs, agreement as Kendall's tau."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from labelling import ids_of, make_db

from collect.agreement import Quorum
from collect.app import AppConfig, create_app
from collect.candidates import Candidates
from collect.db import connect
from collect.export import export
from collect.queue import Queue, QueueError
from collect.ranking import LETTERS, RankShowing, kendall_agreement
from collect.store import Location
from collect.strategies import Picker

QUALITY = {"great": 0, "good": 1, "fair": 2, "poor": 3}  # the answer texts say how good they are


def found() -> Candidates:
    c = Candidates()
    c.add("rank four", ["poor", "great", "fair", "good"])
    c.add("rank three", ["good", "poor", "great"])
    c.add("pair only", ["great", "poor"])
    return c


def letters_for(showing: RankShowing, best_first: list[str]) -> list[str]:
    return [LETTERS[showing.answers.index(text)] for text in best_first]


def by_quality(showing: RankShowing) -> list[str]:
    return letters_for(showing, sorted(showing.answers, key=QUALITY.__getitem__))


def test_a_ranking_is_stored_as_its_pairs_and_undone_whole(engine: Location) -> None:
    db = engine
    make_db(db, found(), ["ann"])
    me = ids_of(db)["ann"]
    queue = Queue(lambda: connect(db), Quorum.of(1), 600.0, rankings=True)
    kinds = []
    while (shown := queue.next(me, lambda rows: [int(r["id"]) for r in rows])) is not None:
        if isinstance(shown, RankShowing):
            kinds.append(len(shown.answers))
            assert len(shown.assignment_ids) == len(shown.answers) * (len(shown.answers) - 1) // 2
            with pytest.raises(QueueError, match="exactly once"):
                queue.rank(me, shown.assignment_ids, ["A", "A", "B", "C"][: len(shown.answers)])
            ranking = queue.rank(me, shown.assignment_ids, by_quality(shown), "clearer")
            assert queue.rank(me, shown.assignment_ids, by_quality(shown)) == ranking  # a retry: the same
        else:
            kinds.append(2)
            queue.answer(me, shown.assignment_id, "A" if shown.a == "great" else "B")
    assert sorted(kinds) == [2, 3, 4]  # two answers stay a pair
    conn = connect(db)
    pairs = conn.execute(
        """SELECT f.text, c.text, a.winner, a.ranking FROM answers a JOIN items i ON i.id = a.item_id
           JOIN completions f ON f.id = i.first_id JOIN completions c ON c.id = i.second_id WHERE a.undone IS NULL"""
    ).fetchall()
    assert len(pairs) == 6 + 3 + 1
    for first, second, winner, _ in pairs:  # every implied pair says what the ranking said
        assert winner == ("first" if QUALITY[first] < QUALITY[second] else "second")
    ranked = [json.loads(line) for line in export(conn, "rankings")[0].splitlines()]
    assert [r["completions"] for r in ranked] == [["great", "good", "fair", "poor"], ["great", "good", "poor"]]
    trl = [json.loads(line) for line in export(conn, "trl")[0].splitlines()]
    assert len(trl) == 10 and all(QUALITY[r["chosen"]] < QUALITY[r["rejected"]] for r in trl)
    merged = [json.loads(line) for line in export(conn, "ranked")[0].splitlines()]
    assert ["great", "good", "fair", "poor"] in [r["completions"] for r in merged]
    queue.undo(me)  # the last thing done was the pair; then the three-answer ranking goes whole
    queue.undo(me)
    live = conn.execute("SELECT COUNT(*) FROM answers WHERE undone IS NULL").fetchone()[0]
    assert live == 6
    again = queue.next(me, lambda rows: [int(r["id"]) for r in rows])
    assert isinstance(again, RankShowing) and len(again.answers) == 3  # back, same screen


def test_kendall_tau_between_annotators(engine: Location) -> None:
    db = engine
    c = Candidates()
    c.add("rank four", ["great", "good", "fair", "poor"])
    make_db(db, c, ["same", "alike", "swap", "reverse"])
    ids = ids_of(db)
    queue = Queue(lambda: connect(db), Quorum.of(4, majority=1), 600.0, rankings=True)
    truth = ["great", "good", "fair", "poor"]
    wanted = {"same": truth, "alike": truth, "swap": ["good", "great", "fair", "poor"], "reverse": truth[::-1]}
    for name, order in wanted.items():
        shown = queue.next(ids[name], lambda rows: [int(r["id"]) for r in rows])
        assert isinstance(shown, RankShowing)
        queue.rank(ids[name], shown.assignment_ids, letters_for(shown, order))
    tau = kendall_agreement(connect(db))
    # pairs of annotators: same-alike 1, same/alike-swap 4/6 each, same/alike-reverse -1 each, swap-reverse -4/6
    expected = (1 + 2 * (4 / 6) + 2 * -1 + -4 / 6) / 6
    assert tau == {"rankings": 4, "annotator_pairs": 6, "mean_kendall_tau": round(expected, 4)}


def test_the_ranking_screen_over_http(engine: Location) -> None:
    db = engine
    tokens = make_db(db, found(), ["ann"])
    head = {"Authorization": f"Bearer {tokens['ann']}"}
    config = AppConfig(db, 1, "admin-secret-of-the-test", Picker("random", None, seed=0), rankings=True)
    with TestClient(create_app(config)) as http:
        seen = 0
        while not (page := http.get("/api/next", headers=head).json())["done"]:
            if "ranking" in page:
                r = page["ranking"]
                best = sorted(r["answers"], key=QUALITY.__getitem__)
                order = [LETTERS[r["answers"].index(t)] for t in best]
                bad = http.post("/api/rank", json={"assignment_ids": r["assignment_ids"], "order": ["Z"]}, headers=head)
                assert bad.status_code == 422, bad.text
                ok = http.post("/api/rank", json={"assignment_ids": r["assignment_ids"], "order": order}, headers=head)
                assert ok.status_code == 200 and ok.json()["ok"] is True
                seen += 1
            else:
                body = {"assignment_id": page["pair"]["assignment_id"], "choice": "A"}
                assert http.post("/api/answer", json=body, headers=head).status_code == 200
        assert seen == 2
        stats = http.get("/api/admin/stats", headers={"Authorization": "Bearer admin-secret-of-the-test"}).json()
        assert stats["rankings"]["rankings"] == 2
        rankings = http.get(
            "/api/admin/export?format=rankings", headers={"Authorization": "Bearer admin-secret-of-the-test"}
        )
        assert rankings.headers["x-export-records"] == "2"
