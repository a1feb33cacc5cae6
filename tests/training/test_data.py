"""Every input format, every bad-data error, and the prompt split."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from training.data import (
    DataError,
    LoadReport,
    PreferencePair,
    fingerprint,
    load_pairs,
    pairs_from_record,
    split_by_prompt,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "preferences"


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_tutorial_json_array(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"question": "Q?", "chosen": "good", "rejected": "bad"}]))
    [pair] = load_pairs([path])
    assert (pair.prompt, pair.chosen, pair.rejected, pair.margin) == ("Q?", "good", "bad", None)
    assert pair.source == f"{path}:record 1"


def test_explicit_prompt_with_margin_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b", "margin": 1.5}])
    [pair] = load_pairs([path])
    assert pair.margin == 1.5 and pair.source.endswith(":1")


def test_implicit_prompt_split_at_last_assistant_turn() -> None:
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: Fine, thanks."
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: Go away."
    [pair] = pairs_from_record({"chosen": chosen, "rejected": rejected}, "x")
    assert pair.prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:"
    assert (pair.chosen, pair.rejected) == (" Fine, thanks.", " Go away.")


def test_implicit_prompt_when_answers_share_a_first_word() -> None:
    chosen = "\n\nHuman: q\n\nAssistant: I can help with that."
    rejected = "\n\nHuman: q\n\nAssistant: I cannot."
    [pair] = pairs_from_record({"chosen": chosen, "rejected": rejected}, "x")
    assert pair.prompt == "\n\nHuman: q\n\nAssistant:" and pair.rejected == " I cannot."


def test_conversational_explicit_and_implicit() -> None:
    user = [{"role": "user", "content": "What is 2+2?"}]
    good, bad = [{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "5"}]
    [explicit] = pairs_from_record({"prompt": user, "chosen": good, "rejected": bad}, "x")
    [implicit] = pairs_from_record({"chosen": user + good, "rejected": user + bad}, "x")
    assert explicit.prompt == implicit.prompt == user
    assert (implicit.chosen, implicit.rejected) == (good, bad)


def test_ranked_lists_expand_to_ordered_pairs_without_ties() -> None:
    record = {"prompt": "P", "completions": ["best", "mid", "also mid", "worst"], "ranks": [1, 2, 2, 3]}
    pairs = pairs_from_record(record, "x")
    got = {(p.chosen, p.rejected) for p in pairs}
    assert got == {("best", "mid"), ("best", "also mid"), ("best", "worst"), ("mid", "worst"), ("also mid", "worst")}


def test_gzip_csv_parquet_and_several_files(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(3)]
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    csv_path = tmp_path / "b.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["prompt", "chosen", "rejected", "margin"])
        writer.writeheader()
        writer.writerows([r | {"margin": ""} for r in rows])
        writer.writerow({"prompt": "multi\nline", "chosen": "x", "rejected": "y", "margin": "0.5"})
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pq_path)
    report = LoadReport()
    pairs = load_pairs([gz, csv_path, pq_path], report=report)
    assert len(pairs) == 10
    assert report.per_file == {str(gz): 3, str(csv_path): 4, str(pq_path): 3}
    multiline = next(p for p in pairs if p.prompt == "multi\nline")
    assert multiline.margin == 0.5 and multiline.source == f"{csv_path}:6"


def test_json_file_holding_json_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lines.json", [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 2)
    assert len(load_pairs([path])) == 2


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "p", "rejected": "b"}, "missing key 'chosen'"),
        ({"prompt": "p", "chosen": 3, "rejected": "b"}, "'chosen' must be a string"),
        ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "empty 'chosen'"),
        ({"prompt": "p", "chosen": "a", "rejected": ""}, "empty 'rejected'"),
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "chosen == rejected"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": "lots"}, "'margin' must be a number"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": float("nan")}, "finite"),
        ({"chosen": "no transcript", "rejected": "here"}, "no prompt key"),
        ({"prompt": 5, "chosen": "a", "rejected": "b"}, "'prompt' must be a string"),
        ({"prompt": "p", "completions": ["a", "b"], "ranks": [1]}, "2 completions but 1 ranks"),
        ({"prompt": "p", "chosen": [{"role": "assistant"}], "rejected": "b"}, "'chosen' must be a string"),
        (["not", "an", "object"], "record must be an object"),
    ],
)
def test_bad_records_name_file_line_and_problem(tmp_path: Path, record: object, message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "chosen": "a", "rejected": "b"}, record])
    with pytest.raises(DataError) as info:
        load_pairs([path])
    assert str(info.value).startswith(f"{path}:2: ")
    assert message in str(info.value)


def test_invalid_json_line_and_skip_flag_counts(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{not json\n{"prompt": "p"}\n')
    with pytest.raises(DataError, match=r"mixed.jsonl:2: invalid JSON"):
        load_pairs([path])
    report = LoadReport()
    pairs = load_pairs([path], skip_invalid=True, report=report)
    assert len(pairs) == 1 and sum(report.skipped.values()) == 2


def test_unknown_file_type_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown file type: neither its extension nor its content"):
        load_pairs([tmp_path / "x.txt"])
    # Read by content where the extension misleads or says nothing: the tutorial's export is one JSON array.
    record = {"question": "q", "chosen": "a", "rejected": "b"}
    (tmp_path / "tutorial.jsonl").write_text(json.dumps([record, record]))
    (tmp_path / "lines.txt").write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    (tmp_path / "one.data").write_text(json.dumps(record))
    assert [len(load_pairs([tmp_path / n])) for n in ("tutorial.jsonl", "lines.txt", "one.data")] == [2, 2, 1]
    with pytest.raises(DataError, match="no such file"):
        load_pairs([str(tmp_path / "missing.jsonl")])


def _pairs(n_prompts: int, per_prompt: int) -> list[PreferencePair]:
    return [
        PreferencePair(f"prompt {i}", f"c{i}.{j}", f"r{i}.{j}") for i in range(n_prompts) for j in range(per_prompt)
    ]


def test_split_by_prompt_never_leaks_and_is_deterministic() -> None:
    pairs = _pairs(200, 3)
    train, held = split_by_prompt(pairs, 0.25, seed=7)
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert len(train) + len(held) == len(pairs)
    assert 0.15 < len(held) / len(pairs) < 0.35
    _, again_held = split_by_prompt(list(reversed(pairs)), 0.25, seed=7)
    assert {p.chosen for p in again_held} == {p.chosen for p in held}  # order of the input does not matter
    _, other_held = split_by_prompt(pairs, 0.25, seed=8)
    assert {p.chosen for p in other_held} != {p.chosen for p in held}


def test_fingerprint_depends_on_content_only() -> None:
    a = _pairs(3, 1)
    b = [PreferencePair(p.prompt, p.chosen, p.rejected, p.margin, "elsewhere") for p in a]
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(a[:2])


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared preference data not present")
def test_shared_files_load_with_skip_invalid() -> None:
    report = LoadReport()
    pairs = load_pairs(sorted(SHARED.glob("*.jsonl*")), skip_invalid=True, report=report)
    assert len(pairs) > 5000
    hh = [p for p in pairs if "hh_rlhf" in p.source]
    assert all(isinstance(p.prompt, str) and p.prompt.endswith("\n\nAssistant:") for p in hh)
