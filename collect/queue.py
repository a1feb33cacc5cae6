"""The annotation queue: lease the next pair (or ranking) to an annotator, record answers (acknowledged =
committed), undo."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .agreement import Quorum
from .db import transaction
from .ranking import SIZES, Leased, RankShowing, implied_choices, pairs_of, shown_order
from .store import Connection, Row

CHOICES = ("A", "B", "tie", "skip")
Order = Callable[[Sequence[Row]], list[int]]  # available items -> item ids, most wanted first


class QueueError(ValueError):
    """An answer or undo that cannot be applied; `status` is the HTTP status the app answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Showing:
    assignment_id: int
    item_id: int
    prompt: str
    a: str
    b: str
    a_is_first: bool


# Every item with its used slots (answers, plus other people's leases that have not lapsed) and this annotator's
# own assignment state; which of them are available is decided in Python, where the quorum rule lives.
CANDIDATES = """
SELECT i.id, i.prompt_id, i.first_id, i.second_id,
       (SELECT COUNT(*) FROM assignments s WHERE s.item_id = i.id
        AND (s.state = 'answered' OR (s.state = 'open' AND s.issued > :cutoff))) AS used,
       (SELECT s.state FROM assignments s WHERE s.item_id = i.id AND s.annotator_id = :me) AS mine
FROM items i ORDER BY i.id
"""
LIVE_LABELS = """
SELECT item_id, winner FROM answers WHERE undone IS NULL AND choice != 'skip' ORDER BY item_id, id
"""


@dataclass(frozen=True)
class Available:
    """The items an annotator may be shown next: `fresh` ones first (disputed pairs at the head), the ones they
    skipped only when nothing fresh is left."""

    fresh: list[Any]
    skipped: list[Any]
    disputed: frozenset[int]

    @property
    def pool(self) -> list[Any]:
        return self.fresh or self.skipped


class Queue:
    """Every read and write of the annotation state; one instance per server, thread-safe (one connection each)."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        quorum: Quorum | int,
        lease_seconds: float,
        rankings: bool = False,
    ) -> None:
        """`rankings`: a prompt with 3-4 answers, none of whose pairs this annotator has seen, is shown as one
        ranking screen (its pairs leased together); pairs left over (a dispute, a lapsed lease) are shown alone."""
        self.rankings = rankings
        self.connect = connect
        self.quorum = quorum if isinstance(quorum, Quorum) else Quorum.of(quorum)
        self.lease_seconds = lease_seconds
        self.rng = random.Random()

    def _labels(self, conn: Connection) -> dict[int, list[str]]:
        labels: dict[int, list[str]] = defaultdict(list)
        for row in conn.execute(LIVE_LABELS).fetchall():
            labels[int(row[0])].append(str(row[1]))
        return labels

    def available(self, conn: Connection, annotator: int) -> Available:
        params = {"cutoff": time.time() - self.lease_seconds, "me": annotator}
        labels = self._labels(conn)
        fresh, skipped, disputed = [], [], set()
        for row in conn.execute(CANDIDATES, params).fetchall():
            item = int(row["id"])
            if int(row["used"]) >= self.quorum.slots(labels.get(item, [])):
                continue
            if row["mine"] in (None, "expired"):
                fresh.append(row)
                if self.quorum.disputed(labels.get(item, [])):
                    disputed.add(item)
            elif row["mine"] == "skipped":
                skipped.append(row)
        return Available(fresh, skipped, frozenset(disputed))

    def _show(self, conn: Connection, assignment_id: int) -> Showing:
        row = conn.execute(
            """SELECT s.id, s.item_id, s.a_is_first, p.text AS prompt, f.text AS first, c.text AS second
               FROM assignments s JOIN items i ON i.id = s.item_id JOIN prompts p ON p.id = i.prompt_id
               JOIN completions f ON f.id = i.first_id JOIN completions c ON c.id = i.second_id WHERE s.id = ?""",
            (assignment_id,),
        ).fetchone()
        a, b = (row["first"], row["second"]) if row["a_is_first"] else (row["second"], row["first"])
        return Showing(row["id"], row["item_id"], row["prompt"], a, b, bool(row["a_is_first"]))

    def _own_open(self, conn: Connection, annotator: int) -> int | None:
        """The annotator's open lease (a reload shows the same pair or ranking, same sides); lapsed ones are
        renewed only where room is left, the others expire."""
        rows = conn.execute(
            "SELECT id, item_id, issued FROM assignments WHERE annotator_id = ? AND state = 'open' "
            "ORDER BY issued DESC, id",
            (annotator,),
        ).fetchall()
        if not rows:
            return None
        now = time.time()
        if rows[0]["issued"] > now - self.lease_seconds:
            return int(rows[0]["id"])
        labels = self._labels(conn)
        kept = None
        for row in rows:
            used = conn.execute(
                "SELECT COUNT(*) FROM assignments WHERE item_id = ? AND id != ? "
                "AND (state = 'answered' OR (state = 'open' AND issued > ?))",
                (row["item_id"], row["id"], now - self.lease_seconds),
            ).fetchone()[0]
            if used < self.quorum.slots(labels.get(int(row["item_id"]), [])):
                conn.execute("UPDATE assignments SET issued = ? WHERE id = ?", (now, row["id"]))
                kept = kept or int(row["id"])
            else:
                conn.execute("UPDATE assignments SET state = 'expired' WHERE id = ?", (row["id"],))
        return kept

    def _open_group(self, conn: Connection, annotator: int, assignment_id: int) -> list[Leased] | None:
        """The pair leases of a ranking screen `assignment_id` belongs to: every pair of its prompt's 3-4 answers
        open for this annotator; None for a lone pair."""
        rows = conn.execute(
            """SELECT s.id, i.first_id, i.second_id, s.a_is_first FROM assignments s JOIN items i ON i.id = s.item_id
               WHERE s.annotator_id = ? AND s.state = 'open'
                 AND i.prompt_id = (SELECT i2.prompt_id FROM assignments s2 JOIN items i2 ON i2.id = s2.item_id
                                    WHERE s2.id = ?) ORDER BY s.id""",
            (annotator, assignment_id),
        ).fetchall()
        leases = [Leased(int(r[0]), int(r[1]), int(r[2]), bool(r[3])) for r in rows]
        answers = {c for lease in leases for c in (lease.first, lease.second)}
        if len(answers) in SIZES and len(leases) == pairs_of(len(answers)):
            return leases
        return None

    def _shown(self, conn: Connection, annotator: int, assignment_id: int) -> Showing | RankShowing:
        leases = self._open_group(conn, annotator, assignment_id) if self.rankings else None
        if leases is None:
            return self._show(conn, assignment_id)
        order = shown_order(leases)
        texts = {
            int(r[0]): str(r[1])
            for r in conn.execute(
                f"SELECT id, text FROM completions WHERE id IN ({', '.join('?' * len(order))})", order
            ).fetchall()
        }
        prompt = conn.execute(
            "SELECT p.text FROM completions c JOIN prompts p ON p.id = c.prompt_id WHERE c.id = ?", (order[0],)
        ).fetchone()[0]
        return RankShowing(tuple(lease.assignment_id for lease in leases), prompt, tuple(texts[c] for c in order))

    def _group(self, conn: Connection, item: int, fresh: set[int]) -> list[tuple[int, int, int]]:
        """(item, first, second) of every pair to lease with `item`: all of its prompt's pairs when the prompt has
        3-4 answers and all of them are fresh to this annotator, else `item` alone."""
        rows = conn.execute(
            "SELECT id, first_id, second_id FROM items WHERE prompt_id = (SELECT prompt_id FROM items WHERE id = ?) "
            "ORDER BY id",
            (item,),
        ).fetchall()
        pairs = [(int(r[0]), int(r[1]), int(r[2])) for r in rows]
        answers = {c for _, first, second in pairs for c in (first, second)}
        group = len(answers) in SIZES and len(pairs) == pairs_of(len(answers)) and all(p[0] in fresh for p in pairs)
        return pairs if self.rankings and group else [p for p in pairs if p[0] == item]

    def next(self, annotator: int, order: Order) -> Showing | RankShowing | None:
        """Lease the next item to `annotator`, in the strategy's order; None when nothing is left for them.

        The strategy ranks outside the write lock (it may ask the reward service); the claim re-checks, inside
        BEGIN IMMEDIATE, that the item still has a free slot, so concurrent annotators never over-fill an item.
        """
        conn = self.connect()
        try:
            with transaction(conn):
                own = self._own_open(conn, annotator)
            if own is not None:
                return self._shown(conn, annotator, own)
            offered = self.available(conn, annotator)
            # Disputed pairs first (a split holds up the export), then in the strategy's order (a stable sort).
            wanted = sorted(order(offered.pool), key=lambda i: i not in offered.disputed)
            with transaction(conn):
                now_offered = self.available(conn, annotator)
                free = {int(r["id"]) for r in now_offered.pool}
                if not free:
                    return None
                # Someone may have taken the wanted items meanwhile: the first still free, else any free one.
                item = next((i for i in wanted if i in free), None) or self.rng.choice(sorted(free))
                group = self._group(conn, item, {int(r["id"]) for r in now_offered.fresh})
                shuffled = sorted({c for _, first, second in group for c in (first, second)})
                self.rng.shuffle(shuffled)  # the order shown, one per showing; each pair's sides follow from it
                now = time.time()
                for pair, first, second in group:
                    # A skipped pair shown again: its skip is withdrawn (stamped, never deleted), so it can be answered.
                    conn.execute(
                        "UPDATE answers SET undone = ? WHERE item_id = ? AND annotator_id = ? AND choice = 'skip' "
                        "AND undone IS NULL",
                        (now, pair, annotator),
                    )
                    a_is_first = shuffled.index(first) < shuffled.index(second)
                    conn.execute(
                        """INSERT INTO assignments (item_id, annotator_id, a_is_first, state, issued)
                           VALUES (?, ?, ?, 'open', ?) ON CONFLICT (item_id, annotator_id)
                           DO UPDATE SET state = 'open', issued = excluded.issued, a_is_first = excluded.a_is_first""",
                        (pair, annotator, int(a_is_first), now),
                    )
                assignment = conn.execute(
                    "SELECT id FROM assignments WHERE item_id = ? AND annotator_id = ?", (item, annotator)
                ).fetchone()[0]
            return self._shown(conn, annotator, assignment)
        finally:
            conn.close()

    def answer(self, annotator: int, assignment_id: int, choice: str, reason: str = "") -> int:
        """Record an answer and commit it before returning its id: once the caller acknowledges, it is on disk.

        Re-sending the same answer (a browser retry) returns the same id instead of recording it twice.
        """
        if choice not in CHOICES:
            raise QueueError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}", 422)
        conn = self.connect()
        try:
            with transaction(conn):
                lease = conn.execute(
                    "SELECT * FROM assignments WHERE id = ? AND annotator_id = ?", (assignment_id, annotator)
                ).fetchone()
                if lease is None:
                    raise QueueError(f"assignment {assignment_id} is not yours", 404)
                live = conn.execute(
                    "SELECT id, choice FROM answers WHERE assignment_id = ? AND undone IS NULL", (assignment_id,)
                ).fetchone()
                if live is not None:
                    if live["choice"] == choice:
                        return int(live["id"])
                    raise QueueError(f"assignment {assignment_id} is already answered ({live['choice']}); undo first")
                if lease["state"] != "open":
                    raise QueueError(f"assignment {assignment_id} has lapsed; load the next pair")
                a_first = bool(lease["a_is_first"])
                winner = {"A": "first" if a_first else "second", "B": "second" if a_first else "first"}.get(choice)
                winner = "tie" if choice == "tie" else winner
                cur = conn.execute(
                    """INSERT INTO answers (assignment_id, item_id, annotator_id, choice, a_is_first, winner,
                       reason, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                    (assignment_id, lease["item_id"], annotator, choice, int(a_first), winner, reason, time.time()),
                )
                answer_id = int(cur.fetchone()[0])
                state = "skipped" if choice == "skip" else "answered"
                conn.execute("UPDATE assignments SET state = ? WHERE id = ?", (state, assignment_id))
                return answer_id
        finally:
            conn.close()

    def rank(
        self,
        annotator: int,
        assignment_ids: Sequence[int],
        letters: Sequence[str],
        reason: str = "",
        skip: bool = False,
    ) -> int:
        """Record a ranking screen (letters as shown, best first) as the pairs it implies, all in one commit;
        returns the ranking's id. A retry of the same ranking returns the same id; `skip` skips every pair."""
        conn = self.connect()
        try:
            with transaction(conn):
                wanted = sorted(set(assignment_ids))
                leases = self._open_group(conn, annotator, wanted[0]) if wanted else None
                held = sorted(lease.assignment_id for lease in leases or [])
                if held != wanted:
                    done = self._ranked_already(conn, annotator, wanted)
                    if done is not None:
                        return done
                    raise QueueError("these are not the pairs of a ranking you hold; load the next one", 409)
                assert leases is not None
                try:
                    choices = {a: "skip" for a in wanted} if skip else implied_choices(leases, letters)
                except ValueError as e:
                    raise QueueError(str(e), 422) from None
                now = time.time()
                ranking = None
                for lease in leases:
                    choice = choices[lease.assignment_id]
                    winner = (
                        None if choice == "skip" else ("first" if (choice == "A") == lease.a_is_first else "second")
                    )
                    row = conn.execute(
                        """INSERT INTO answers (assignment_id, item_id, annotator_id, choice, a_is_first, winner,
                           reason, created, ranking)
                           SELECT ?, item_id, ?, ?, ?, ?, ?, ?, ? FROM assignments WHERE id = ? RETURNING id""",
                        (
                            lease.assignment_id,
                            annotator,
                            choice,
                            int(lease.a_is_first),
                            winner,
                            reason,
                            now,
                            ranking,
                            lease.assignment_id,
                        ),
                    ).fetchone()
                    ranking = ranking or int(row[0])
                    state = "skipped" if skip else "answered"
                    conn.execute("UPDATE assignments SET state = ? WHERE id = ?", (state, lease.assignment_id))
                assert ranking is not None
                conn.execute(
                    "UPDATE answers SET ranking = ? WHERE id = ?", (ranking, ranking)
                )  # the first answer names the ranking it starts
                return ranking
        finally:
            conn.close()

    def _ranked_already(self, conn: Connection, annotator: int, assignment_ids: list[int]) -> int | None:
        """The ranking these assignments were answered by, when one live ranking covers exactly them."""
        marks = {
            r[0]
            for r in conn.execute(
                f"SELECT ranking FROM answers WHERE annotator_id = ? AND undone IS NULL AND assignment_id IN "
                f"({', '.join('?' * len(assignment_ids))})",
                (annotator, *assignment_ids),
            ).fetchall()
        }
        if len(marks) != 1 or None in marks:
            return None
        mark = int(next(iter(marks)))
        covered = conn.execute("SELECT COUNT(*) FROM answers WHERE ranking = ? AND undone IS NULL", (mark,)).fetchone()[
            0
        ]
        return mark if covered == len(assignment_ids) else None

    def undo(self, annotator: int) -> int:
        """Withdraw the annotator's last answer and re-open its pair for them (same sides); returns its item id."""
        conn = self.connect()
        try:
            with transaction(conn):
                last = conn.execute(
                    "SELECT id, assignment_id, item_id, ranking FROM answers WHERE annotator_id = ? AND undone IS NULL "
                    "ORDER BY id DESC LIMIT 1",
                    (annotator,),
                ).fetchone()
                if last is None:
                    raise QueueError("nothing to undo")
                now = time.time()
                # A ranking is undone whole: every pair it implied.
                undone = (
                    conn.execute(
                        "SELECT id, assignment_id FROM answers WHERE ranking = ? AND undone IS NULL", (last["ranking"],)
                    ).fetchall()
                    if last["ranking"] is not None
                    else [last]
                )
                # What they were looking at goes back to the pool; the undone pairs are theirs again, same sides.
                conn.execute(
                    "UPDATE assignments SET state = 'expired' WHERE annotator_id = ? AND state = 'open'", (annotator,)
                )
                for row in undone:
                    conn.execute("UPDATE answers SET undone = ? WHERE id = ?", (now, row["id"]))
                    conn.execute(
                        "UPDATE assignments SET state = 'open', issued = ? WHERE id = ?", (now, row["assignment_id"])
                    )
                return int(last["item_id"])
        finally:
            conn.close()
