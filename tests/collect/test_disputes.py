"""Disputed pairs get more annotators until settled; skips come back last; reasons and raw votes are exported."""

from __future__ import annotations

import json

from labelling import candidates, ids_of, make_db, make_queue

from collect.agreement import Quorum
from collect.db import connect
from collect.export import export
from collect.queue import Queue
from collect.store import Location
from collect.team import load_quorum, save_quorum


def first_choice(rows: list) -> list[int]:
    return [int(r["id"]) for r in rows]


def vote(queue: Queue, who: int, want: dict[int, str]) -> list[int]:
    """Answer every pair offered to `who`: the winner (first/second) wanted for the item, as A/B on its sides."""
    seen = []
    while (shown := queue.next(who, first_choice)) is not None:
        winner = want[shown.item_id]
        choice = "tie" if winner == "tie" else ("A" if (winner == "first") == shown.a_is_first else "B")
        queue.answer(who, shown.assignment_id, choice, f"{winner} because reasons {shown.item_id}")
        seen.append(shown.item_id)
    return seen


def test_only_split_pairs_go_to_one_more_annotator_until_settled(engine: Location) -> None:
    db = engine
    make_db(db, candidates(13, 3), ["ann", "bob", "carl", "dan"])  # 13 prompts x 3 answers = 39 pairs
    ids = ids_of(db)
    quorum = Quorum.of(2)  # two votes each; a 1-1 split needs a third
    queue = Queue(lambda: connect(db), quorum, 600.0)
    items = list(range(1, 40))
    split = set(items[::3])  # 13 pairs where ann and bob disagree
    ann = {i: "first" for i in items}
    bob = {i: ("second" if i in split else "first") for i in items}
    assert sorted(vote(queue, ids["ann"], ann)) == items
    assert sorted(vote(queue, ids["bob"], bob)) == items
    # carl sees only the split pairs (one more vote each settles them 2-1), and dan then sees nothing.
    carl = {i: ("second" if i % 2 else "first") for i in items}
    assert sorted(vote(queue, ids["carl"], carl)) == sorted(split)
    assert vote(queue, ids["dan"], carl) == []
    conn = connect(db)
    save_quorum(conn, quorum)
    text, report = export(conn, "trl")
    print("disputes:", report["disputes"], "records:", report["records"])
    assert report["disputes"] == {
        "annotations_per_item": 2,
        "majority": 2,
        "most_annotations": 4,
        "split_at_first": 13,
        "resolved_by_more_votes": 13,
        "waiting_for_votes": 0,
        "unresolved_at_most": 0,
    }
    assert report["records"] == len(text.splitlines()) == 39 and report["no_majority"] == 0
    disagreement = next(d for d in report["disagreements"] if d["item"] == 1)
    assert [(r["annotator"], r["label"]) for r in disagreement["reasons"]] == [
        ("ann", "first"),
        ("bob", "second"),
        ("carl", "second"),
    ]
    assert disagreement["reasons"][0]["reason"] == "first because reasons 1"


def test_a_pair_still_split_at_the_most_stays_out_and_is_reported(engine: Location) -> None:
    db = engine
    make_db(db, candidates(1, 2), ["a", "b", "c", "d", "e"])
    ids = ids_of(db)
    quorum = Quorum.of(2, majority=3, most=4)
    queue = Queue(lambda: connect(db), quorum, 600.0)
    for name, winner in [("a", "first"), ("b", "second"), ("c", "first"), ("d", "second")]:
        assert vote(queue, ids[name], {1: winner}) == [1]
    assert vote(queue, ids["e"], {1: "first"}) == []  # four votes is the most
    conn = connect(db)
    save_quorum(conn, quorum)
    assert load_quorum(conn) == quorum
    _, report = export(conn, "trl")
    assert report["disputes"]["split_at_first"] == 1 and report["disputes"]["unresolved_at_most"] == 1
    assert report["records"] == 0 and report["no_majority"] == 1  # 2-2: no pair to train on


def test_raising_the_bar_reopens_only_what_is_disputed(engine: Location) -> None:
    """The old way (a higher per-pair count) reopened every pair; a higher majority only the undecided ones."""
    db = engine
    make_db(db, candidates(2, 2), ["a", "b", "c"])
    ids = ids_of(db)
    queue = Queue(lambda: connect(db), Quorum.of(2, majority=1), 600.0)
    assert sorted(vote(queue, ids["a"], {1: "first", 2: "first"})) == [1, 2]
    assert sorted(vote(queue, ids["b"], {1: "first", 2: "second"})) == [1, 2]
    stricter = Queue(lambda: connect(db), Quorum.of(2, majority=2), 600.0)
    assert vote(stricter, ids["c"], {1: "first", 2: "first"}) == [2]


def test_skipped_pairs_come_back_after_everything_else(engine: Location) -> None:
    db = engine
    make_db(db, candidates(3, 2), ["ann"])
    who = ids_of(db)["ann"]
    queue = make_queue(db, 1)
    first = queue.next(who, first_choice)
    assert first is not None
    queue.answer(who, first.assignment_id, "skip")
    order = []
    while (shown := queue.next(who, first_choice)) is not None:
        order.append(shown.item_id)
        queue.answer(who, shown.assignment_id, "A")
    assert order == [2, 3, first.item_id]  # the skipped pair last, and answerable
    conn = connect(db)
    live = conn.execute("SELECT choice FROM answers WHERE undone IS NULL ORDER BY id").fetchall()
    assert [r[0] for r in live] == ["A", "A", "A"]  # the skip was withdrawn when the pair was answered


def test_votes_export_is_every_live_vote_as_cast(engine: Location) -> None:
    db = engine
    make_db(db, candidates(2, 2), ["ann", "bob"])
    ids = ids_of(db)
    queue = make_queue(db, 2)
    vote(queue, ids["ann"], {1: "first", 2: "tie"})
    shown = queue.next(ids["bob"], first_choice)
    assert shown is not None
    queue.answer(ids["bob"], shown.assignment_id, "skip")
    text, report = export(connect(db), "votes")
    rows = [json.loads(line) for line in text.splitlines()]
    assert report == {"format": "votes", "records": 3, "skips": 1}
    assert [(r["annotator"], r["item"], r["winner"], r["choice"]) for r in rows][2] == ("bob", 1, None, "skip")
    assert rows[0]["winner"] == "first" and rows[0]["reason"] == "first because reasons 1"
    assert rows[0]["choice"] == ("A" if rows[0]["a_was"] == "first" else "B")
    assert rows[1]["winner"] == "tie" and rows[0]["prompt"] == "prompt 0" and rows[0]["time"].endswith("+00:00")
