"""bench.training end to end on a tiny random BERT and tiny synthetic files, so the peer comparison cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import synthetic_records, write_records


def test_quick_training_benchmark_compares_our_fit_with_trl(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("trl", reason="trl is in the dev extra")
    from bench.training import main

    a = write_records(tmp_path / "alpha.jsonl", synthetic_records(64))
    b = write_records(tmp_path / "beta.jsonl", synthetic_records(64, seed=1))
    docs = tmp_path / "training.md"
    docs.write_text("# Training\n")
    argv = ["--quick", "--base", str(tiny_bert), "--data", str(a), str(b), "--truncation", "left", "head-tail"]
    argv += ["--out", str(tmp_path / "bench"), "--docs", str(docs), "--work", str(tmp_path / "w")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = {r["recipe"]: r for r in result["rows"]}
    assert set(rows) == {"ours (left)", "ours (head-tail)", "TRL RewardTrainer"}
    for row in rows.values():
        assert row["seeds"] == [0] and row["pairs_used"] == 48 and row["train_seconds"] > 0
        assert set(row["accuracy"]) == {"alpha", "beta", "pooled"}
        assert all(0 <= a["mean"] <= 1 and a["sd"] >= 0 for a in row["accuracy"].values())
    # Both recipes train on the same split of each seed: the same pairs, as TRL keeps every short pair.
    assert rows["TRL RewardTrainer"]["pairs_used"] == rows["ours (left)"]["pairs_used"]
    table = docs.read_text()
    assert table.startswith("# Training\n") and "| ours (head-tail) | 0 | 48 (0) |" in table and "± " in table
    assert "python -m bench.training --quick" in capsys.readouterr().out and result["command"] in table


def test_the_table_gives_mean_and_spread_over_seeds() -> None:
    from bench.training import markdown, summarise

    runs = [
        {"recipe": "ours (left)", "seed": s, "pairs_used": 100, "pairs_truncated": 10, "train_seconds": 60.0 + s}
        | {"accuracy": {"a": acc, "b": 0.5}, "n": {"a": 30, "b": 10}}
        for s, acc in enumerate([0.6, 0.7, 0.8])
    ]
    (row,) = summarise(runs)
    assert row["accuracy"]["a"]["mean"] == pytest.approx(0.7) and row["accuracy"]["a"]["sd"] == pytest.approx(0.1)
    assert row["accuracy"]["pooled"]["mean"] == pytest.approx((0.7 * 30 + 0.5 * 10) / 40)
    table = markdown([row], "c", "")
    assert "| ours (left) | 0,1,2 | 100 (10) | 1:01 | 70.0 ± 10.0 | 50.0 ± 0.0 | 65.0 ± 7.5 |" in table
