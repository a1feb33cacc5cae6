"""Labels database -> training file (tutorial JSON, TRL JSONL or ranked JSONL) by majority vote, with a report."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .agreement import group_votes, majority, summary
from .progress import disagreements as split_votes
from .progress import live_votes
from .ranking import export_rankings
from .store import Connection
from .team import load_quorum

FORMATS = ("tutorial", "trl", "ranked", "votes", "rankings")


class ExportError(ValueError):
    pass


@dataclass(frozen=True)
class Decision:
    item: int
    prompt_id: int
    prompt: str
    first: tuple[int, str]  # (completion id, text)
    second: tuple[int, str]
    label: str | None  # first / second / tie, None when no label has a strict majority
    votes: dict[str, int]


def decisions(conn: Connection, min_votes: int) -> tuple[list[Decision], dict[str, Any]]:
    """One majority decision per item with at least `min_votes` live votes, and the agreement report."""
    votes = group_votes(live_votes(conn))
    rows = conn.execute(
        """SELECT i.id, i.prompt_id, p.text AS prompt, i.first_id, f.text AS first, i.second_id, c.text AS second
           FROM items i JOIN prompts p ON p.id = i.prompt_id JOIN completions f ON f.id = i.first_id
           JOIN completions c ON c.id = i.second_id ORDER BY i.id"""
    ).fetchall()
    found = []
    for r in rows:
        labels = [str(label) for _, label in votes.get(int(r["id"]), [])]
        if len(labels) < min_votes or not labels:
            continue
        label = majority(labels)
        found.append(
            Decision(
                int(r["id"]),
                int(r["prompt_id"]),
                r["prompt"],
                (int(r["first_id"]), r["first"]),
                (int(r["second_id"]), r["second"]),
                None if label is None else str(label),
                dict(Counter(labels)),
            )
        )
    return found, summary(votes)


def _pair(d: Decision) -> tuple[str, str]:
    return (d.first[1], d.second[1]) if d.label == "first" else (d.second[1], d.first[1])


def _ranked(decided: list[Decision], keep_ties: bool) -> list[dict[str, Any]]:
    """Per prompt, majorities merged by ranked pairs (Tideman): the strongest first, an edge that would close a
    cycle dropped. A total order becomes one record; otherwise each kept edge is its own two-answer record, so no
    preference the annotators did not imply is invented. Kept ties are [x, y] records with equal ranks (which
    the training loader reads as no preference)."""
    by_prompt: dict[int, list[Decision]] = defaultdict(list)
    for d in decided:
        by_prompt[d.prompt_id].append(d)
    records: list[dict[str, Any]] = []
    for group in by_prompt.values():
        prompt = group[0].prompt
        text = {cid: t for d in group for cid, t in (d.first, d.second)}
        edges = []
        for d in group:
            if d.label in ("first", "second"):
                win, lose = (d.first[0], d.second[0]) if d.label == "first" else (d.second[0], d.first[0])
                edges.append(
                    (d.votes.get(d.label, 0) - d.votes.get("first" if d.label == "second" else "second", 0), win, lose)
                )
        above: dict[int, set[int]] = defaultdict(set)  # transitive closure: above[x] = everything beating x
        locked = []
        for _, win, lose in sorted(edges, key=lambda e: -e[0]):
            if lose == win or lose in above[win]:
                continue  # would close a cycle
            locked.append((win, lose))
            for node in [lose, *[n for n in text if lose in above[n]]]:
                above[node] |= {win} | above[win]
        nodes = sorted({n for e in locked for n in e})
        total = all(a in above[b] or b in above[a] for i, a in enumerate(nodes) for b in nodes[i + 1 :])
        if locked and total:
            order = sorted(nodes, key=lambda n: len(above[n]))
            records.append(
                {"prompt": prompt, "completions": [text[n] for n in order], "ranks": [len(above[n]) + 1 for n in order]}
            )
        else:
            records += [{"prompt": prompt, "completions": [text[w], text[x]], "ranks": [1, 2]} for w, x in locked]
        if keep_ties:
            records += [
                {"prompt": prompt, "completions": [d.first[1], d.second[1]], "ranks": [1, 1]}
                for d in group
                if d.label == "tie"
            ]
    return records


def votes(conn: Connection) -> list[dict[str, Any]]:
    """Every live vote as it was cast, for teams that aggregate themselves: the pair, who, what they clicked on
    which sides, the winner in the pair's own orientation (first/second), the reason and the time (UTC)."""
    rows = conn.execute(
        """SELECT a.item_id, p.text AS prompt, f.text AS first, c.text AS second, n.name, a.choice, a.a_is_first,
                  a.winner, a.reason, a.created
           FROM answers a JOIN annotators n ON n.id = a.annotator_id JOIN items i ON i.id = a.item_id
           JOIN prompts p ON p.id = i.prompt_id JOIN completions f ON f.id = i.first_id
           JOIN completions c ON c.id = i.second_id WHERE a.undone IS NULL ORDER BY a.id"""
    ).fetchall()
    return [
        {
            "item": int(r["item_id"]),
            "prompt": r["prompt"],
            "first": r["first"],
            "second": r["second"],
            "annotator": r["name"],
            "choice": r["choice"],
            "a_was": "first" if r["a_is_first"] else "second",
            "winner": r["winner"] if r["choice"] != "skip" else None,
            "reason": r["reason"],
            "time": datetime.fromtimestamp(float(r["created"]), UTC).isoformat(timespec="milliseconds"),
        }
        for r in rows
    ]


def export(conn: Connection, fmt: str, keep_ties: bool = False, min_votes: int = 1) -> tuple[str, dict]:
    """(file text, report). Items without a strict majority are left out and listed; ties are dropped unless
    kept (ranked format only: chosen/rejected cannot say "equally good"). `votes`: every live vote, one per line."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "rankings":  # each annotator's ranking screens as given, best first
        given = export_rankings(conn)
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in given), {"format": fmt, "records": len(given)}
    if fmt == "votes":
        cast = votes(conn)
        text = "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in cast)
        return text, {"format": fmt, "records": len(cast), "skips": sum(v["choice"] == "skip" for v in cast)}
    if keep_ties and fmt != "ranked":
        raise ExportError("--keep-ties needs --format ranked: a chosen/rejected record cannot hold a tie")
    found, agreement = decisions(conn, min_votes)
    decided = [d for d in found if d.label in ("first", "second")]
    if fmt == "ranked":
        records = _ranked(found if keep_ties else decided, keep_ties)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        key = "question" if fmt == "tutorial" else "prompt"
        records = [dict(zip((key, "chosen", "rejected"), (d.prompt, *_pair(d)), strict=True)) for d in decided]
        if fmt == "tutorial":  # the tutorial's own layout: a JSON array, 4-space indent, UTF-8 kept as is
            text = json.dumps(records, ensure_ascii=False, indent=4) + "\n"
        else:
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    reasons = {d["item"]: d["votes"] for d in split_votes(conn, limit=None)}
    disagreements = [
        {
            "item": d.item,
            "prompt": d.prompt,
            "first": d.first[1],
            "second": d.second[1],
            "votes": d.votes,
            "majority": d.label,
            "reasons": [
                {"annotator": v["annotator"], "label": v["label"], "reason": v["reason"]}
                for v in reasons.get(d.item, [])
            ],
        }
        for d in found
        if len(d.votes) > 1
    ]
    report = {
        "format": fmt,
        "records": len(records),
        "items_with_votes": len(found),
        "pairs_decided": len(decided),
        "ties": sum(d.label == "tie" for d in found),
        "ties_kept": keep_ties,
        "no_majority": sum(d.label is None for d in found),
        **agreement,
        "disputes": load_quorum(conn).report(group_votes(live_votes(conn))),
        "disagreements": disagreements,
    }
    return text, report


def write_atomically(path: Path, text: str) -> None:
    """Write beside the target and rename: a killed export never leaves half a training file."""
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
