"""Export: majority vote per pair, ties, ranked-pairs merge, agreement report; every format loads for training."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from labelling import CLI, SHARED_DATA, candidates, ids_of, make_db, make_queue

from collect.candidates import Candidates
from collect.db import connect
from collect.export import ExportError, export
from collect.store import Location, Row
from training.data import load_pairs


def in_order(rows: Sequence[Row]) -> list[int]:
    return [int(r["id"]) for r in rows]


def vote(db: Location, per_item: int, choose: dict[str, object]) -> None:
    """Each annotator answers everything offered; choose[name](a, b) -> the text they prefer, "tie" or "skip"."""
    ids = ids_of(db)
    queue = make_queue(db, per_item)
    for name, rule in choose.items():
        while (s := queue.next(ids[name], in_order)) is not None:
            pick = rule(s.a, s.b)  # type: ignore[operator]
            choice = pick if pick in ("tie", "skip") else ("A" if pick == s.a else "B")
            queue.answer(ids[name], s.assignment_id, choice)


def longer(a: str, b: str) -> str:
    return a if len(a) > len(b) else b


def test_majority_vote_agreement_and_all_formats_train(tmp_path: Path, engine: Location) -> None:
    db = engine
    found = Candidates()
    found.add("Rank these", ["a", "bb", "ccc", "dddd"])  # 6 pairs with a clear order by length
    found.add("Tie here", ["same-ish 1", "same-ish 2"])
    make_db(db, found, ["ann", "bob", "eve"])
    vote(
        db,
        3,
        {
            "ann": lambda a, b: "tie" if a.startswith("same") else longer(a, b),
            "bob": lambda a, b: "tie" if a.startswith("same") else longer(a, b),
            "eve": lambda a, b: min(a, b, key=len),  # careless: always the shorter
        },
    )
    conn = connect(db)
    text, report = export(conn, "tutorial")
    records = json.loads(text)
    assert len(records) == 6 and all(len(r["chosen"]) > len(r["rejected"]) for r in records)
    assert report["ties"] == 1 and report["no_majority"] == 0 and len(report["disagreements"]) == 7
    assert report["annotators"][0]["name"] == "eve" and report["annotators"][0]["agreement_with_majority"] == 0.0
    assert report["krippendorff_alpha"] < 0.5 and report["percent_agreement"] == pytest.approx(1 / 3, abs=1e-4)

    ranked, _ = export(conn, "ranked")
    assert json.loads(ranked) == {
        "prompt": "Rank these",
        "completions": ["dddd", "ccc", "bb", "a"],
        "ranks": [1, 2, 3, 4],
    }
    kept, _ = export(conn, "ranked", keep_ties=True)
    assert json.loads(kept.splitlines()[1])["ranks"] == [1, 1]
    with pytest.raises(ExportError, match="needs --format ranked"):
        export(conn, "trl", keep_ties=True)
    for fmt, name in (("tutorial", "p.json"), ("trl", "p.jsonl"), ("ranked", "r.jsonl")):
        out = tmp_path / name
        out.write_text(export(conn, fmt, keep_ties=fmt == "ranked")[0], encoding="utf-8")
        pairs = load_pairs([out])
        assert len(pairs) == 6 and all(len(p.chosen) > len(p.rejected) for p in pairs), fmt  # type: ignore[arg-type]


def test_ranked_export_invents_no_preference_when_the_order_is_partial(engine: Location) -> None:
    db = engine
    make_db(db, candidates(1, 4), ["ann"])
    ids = ids_of(db)
    queue = make_queue(db, 1)
    answered, shown = 0, set()
    # Skipped pairs come back once nothing else is left: the first pair shown again ends the session.
    while (s := queue.next(ids["ann"], in_order)) is not None and s.item_id not in shown:
        shown.add(s.item_id)
        # only 0 vs 1 and 2 vs 3 are judged: no order between the two pairs is known
        judged = {s.a[-1], s.b[-1]} in ({"0", "1"}, {"2", "3"})
        queue.answer(ids["ann"], s.assignment_id, ("A" if s.a < s.b else "B") if judged else "skip")
        answered += judged
    assert answered == 2
    ranked, _ = export(connect(db), "ranked")
    records = [json.loads(line) for line in ranked.splitlines()]
    assert [r["completions"] for r in records] == [["answer 0.0", "answer 0.1"], ["answer 0.2", "answer 0.3"]]


def tutorial_roundtrip(tmp_path: Path, source: Path, db: Location) -> None:
    """tutorial records -> candidates -> annotators pick the original chosen -> export == the source, byte for byte."""
    records = json.loads(source.read_text(encoding="utf-8"))
    cands = tmp_path / "c.jsonl"
    cands.write_text(
        "".join(
            json.dumps({"prompt": r["question"], "completions": [r["chosen"], r["rejected"]]}, ensure_ascii=False)
            + "\n"
            for r in records
        ),
        encoding="utf-8",
    )
    assert subprocess.run([*CLI, "import", "--db", str(db), "--candidates", str(cands)]).returncode == 0
    make_db(db, Candidates(), ["ann"])
    chosen = {r["chosen"] for r in records}
    vote(db, 1, {"ann": lambda a, b: a if a in chosen else b})
    out = tmp_path / "prefs.json"
    result = subprocess.run(
        [*CLI, "export", "--db", str(db), "--format", "tutorial", "--out", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == source.read_bytes()


def test_chinese_tutorial_records_round_trip_byte_for_byte(tmp_path: Path, engine: Location) -> None:
    source = tmp_path / "zh.json"
    records = [
        {"question": "什么是字典？", "chosen": "字典是键值对的可变映射，键必须可哈希。", "rejected": "字典存数据。"},
        {"question": "emoji 🐍 and\nnewlines?", "chosen": 'yes "quoted" \\ ok', "rejected": "no"},
    ]
    source.write_text(json.dumps(records, ensure_ascii=False, indent=4) + "\n", encoding="utf-8")
    tutorial_roundtrip(tmp_path, source, engine)


@pytest.mark.skipif(not (SHARED_DATA / "tutorial_example.json").exists(), reason="shared preference data absent")
def test_the_tutorials_own_example_round_trips_byte_for_byte(tmp_path: Path, engine: Location) -> None:
    tutorial_roundtrip(tmp_path, SHARED_DATA / "tutorial_example.json", engine)


def test_cli_refusals_are_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    cases = [
        (["export", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "p.json")], "no such database"),
        (["export", "--db", str(junk), "--out", str(tmp_path / "no" / "p.json")], "no such folder"),
        (["export", "--db", str(junk), "--out", str(tmp_path / "p.json")], "not a usable SQLite database"),
        (["add-annotator", "  ", "--db", str(tmp_path / "l.sqlite")], "annotator name must be"),  # creates l.sqlite
        (
            [
                "export",
                "--db",
                str(tmp_path / "l.sqlite"),
                "--out",
                str(tmp_path / "p.json"),
                "--format",
                "trl",
                "--keep-ties",
            ],
            "needs --format ranked",
        ),
    ]
    for argv, message in cases:
        result = subprocess.run([*CLI, *argv], capture_output=True, text=True)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
