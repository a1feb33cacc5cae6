"""Assignment rules: k different annotators per pair, never twice to one person, skips, leases, undo, concurrency."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Sequence

import pytest
from labelling import candidates, ids_of, make_db, make_queue

from collect.db import connect
from collect.queue import QueueError
from collect.store import Location, Row


def in_order(rows: Sequence[Row]) -> list[int]:
    return [int(r["id"]) for r in rows]


def test_each_pair_goes_to_k_different_annotators_then_leaves_the_queue(engine: Location) -> None:
    db = engine
    make_db(db, candidates(2, 3), ["a", "b", "c", "d"])  # 2 prompts x 3 answers = 6 pairs
    ids = ids_of(db)
    queue = make_queue(db, per_item=2)
    seen: dict[str, list[int]] = {}
    for name in "abcd":
        while (showing := queue.next(ids[name], in_order)) is not None:
            seen.setdefault(name, []).append(showing.item_id)
            # Everyone prefers the pair's first answer: no pair is disputed, so none needs a third annotator.
            queue.answer(ids[name], showing.assignment_id, "A" if showing.a_is_first else "B")
    per_item = Counter(i for items in seen.values() for i in items)
    assert set(per_item.values()) == {2} and len(per_item) == 6
    assert all(len(items) == len(set(items)) for items in seen.values())  # never twice to one person
    assert set(seen) == {"a", "b"}  # a and b filled every pair; nothing was left for c and d


def test_skipped_pairs_do_not_use_a_slot_and_come_back_only_while_room_is_left(engine: Location) -> None:
    db = engine
    make_db(db, candidates(1, 2), ["a", "b"])
    ids = ids_of(db)
    queue = make_queue(db, per_item=1)
    showing = queue.next(ids["a"], in_order)
    assert showing is not None
    queue.answer(ids["a"], showing.assignment_id, "skip")
    other = queue.next(ids["b"], in_order)
    assert other is not None and other.item_id == showing.item_id  # the skip left the slot free
    assert queue.next(ids["a"], in_order) is None  # b holds the one slot now: the skipped pair is not a's again
    queue.answer(ids["b"], other.assignment_id, "A")
    assert queue.next(ids["a"], in_order) is None


def test_sides_are_randomised_per_showing_and_the_winner_recorded_canonically(engine: Location) -> None:
    db = engine
    make_db(db, candidates(20, 2), ["a"])
    queue = make_queue(db, per_item=1)
    me = ids_of(db)["a"]
    sides = []
    while (s := queue.next(me, in_order)) is not None:
        sides.append(s.a_is_first)
        assert s.a.endswith(".0" if s.a_is_first else ".1") and s.b.endswith(".1" if s.a_is_first else ".0")
        queue.answer(me, s.assignment_id, "A")  # always the left one
    assert 0 < sum(sides) < len(sides)
    conn = connect(db)
    rows = conn.execute("SELECT a_is_first, winner FROM answers").fetchall()
    assert all(r["winner"] == ("first" if r["a_is_first"] else "second") for r in rows)


def test_reload_shows_the_same_pair_and_a_lapsed_lease_frees_the_slot(engine: Location) -> None:
    db = engine
    make_db(db, candidates(1, 2), ["a", "b"])
    ids = ids_of(db)
    queue = make_queue(db, per_item=1, lease_seconds=0.3)
    first = queue.next(ids["a"], in_order)
    again = queue.next(ids["a"], in_order)
    assert first is not None and again == first  # same pair, same sides
    assert queue.next(ids["b"], in_order) is None  # a holds the only slot
    time.sleep(0.4)
    taken = queue.next(ids["b"], in_order)
    assert taken is not None
    queue.answer(ids["b"], taken.assignment_id, "B")
    assert queue.next(ids["a"], in_order) is None  # a's lapsed lease is not revived over a full pair
    with pytest.raises(QueueError, match="lapsed"):
        queue.answer(ids["a"], first.assignment_id, "A")


def test_answer_is_idempotent_conflicts_are_refused_and_undo_reopens_the_pair(engine: Location) -> None:
    db = engine
    make_db(db, candidates(2, 2), ["a", "b"])
    ids = ids_of(db)
    queue = make_queue(db, per_item=1)
    s = queue.next(ids["a"], in_order)
    assert s is not None
    answer_id = queue.answer(ids["a"], s.assignment_id, "A", "clearer")
    assert queue.answer(ids["a"], s.assignment_id, "A") == answer_id  # a retried POST records nothing new
    with pytest.raises(QueueError, match="already answered"):
        queue.answer(ids["a"], s.assignment_id, "B")
    with pytest.raises(QueueError, match="not yours") as e:
        queue.answer(ids["b"], s.assignment_id, "A")
    assert e.value.status == 404
    nxt = queue.next(ids["a"], in_order)
    assert nxt is not None and nxt.item_id != s.item_id
    assert queue.undo(ids["a"]) == s.item_id
    back = queue.next(ids["a"], in_order)
    assert back == s  # the undone pair, same sides; the one on screen went back to the pool
    queue.answer(ids["a"], s.assignment_id, "B")
    conn = connect(db)
    live = conn.execute("SELECT choice FROM answers WHERE undone IS NULL").fetchall()
    assert [r["choice"] for r in live] == ["B"] and conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 2
    assert queue.next(ids["b"], in_order) is not None  # nxt was released by the undo
    with pytest.raises(QueueError, match="nothing to undo"):
        queue.undo(ids["b"])


def test_concurrent_annotators_never_over_fill_a_pair(engine: Location) -> None:
    db = engine
    names = [f"n{i}" for i in range(8)]
    make_db(db, candidates(3, 2), names)  # 3 pairs x 2 slots = 6 slots for 8 eager annotators
    ids = ids_of(db)
    queue = make_queue(db, per_item=2)
    start = threading.Barrier(len(names))
    got: list[tuple[str, int]] = []

    def work(name: str) -> None:
        rng = random.Random(name)
        start.wait()
        while (s := queue.next(ids[name], lambda rows: rng.sample(in_order(rows), len(rows)))) is not None:
            got.append((name, s.item_id))
            # One mind about every pair: none is disputed, so each gets exactly its two slots.
            queue.answer(ids[name], s.assignment_id, "A" if s.a_is_first else "B")

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(item for _, item in got) == {1: 2, 2: 2, 3: 2}
    assert len(set(got)) == len(got)
