"""bench.training end to end on a tiny random BERT and tiny synthetic files, so the peer comparison cannot rot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    argv += ["--variant", "default", "cls=--pooling cls"]
    argv += ["--out", str(tmp_path / "bench"), "--docs", str(docs), "--work", str(tmp_path / "w")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = {r["recipe"]: r for r in result["rows"]}
    ours = [f"ours ({policy}, 64 tokens{variant})" for policy in ("left", "head-tail") for variant in ("", ", cls")]
    assert set(rows) == {*ours, "TRL RewardTrainer"}
    for row in rows.values():
        assert row["seeds"] == [0] and row["pairs_used"] == 48 and row["train_seconds"] > 0
        assert set(row["accuracy"]) == {"alpha", "beta", "pooled"}
        assert all(0 <= a["mean"] <= 1 and a["sd"] >= 0 for a in row["accuracy"].values())
    # Both recipes train on the same split of each seed: the same pairs, as TRL keeps every short pair.
    assert rows["TRL RewardTrainer"]["pairs_used"] == rows["ours (left, 64 tokens)"]["pairs_used"]
    table = docs.read_text()
    assert (
        table.startswith("# Training\n")
        and "| ours (head-tail, 64 tokens, cls) | 0 | 48 (0) |" in table
        and "± " in table
    )
    assert "python -m bench.training --quick" in capsys.readouterr().out and result["command"] in table
    # --summarise tabulates earlier runs without training: the same rows.
    again = tmp_path / "again"
    assert main(["--summarise", str(tmp_path / "bench.json"), "--out", str(again)]) == 0
    assert json.loads((again.with_suffix(".json")).read_text())["rows"] == result["rows"]


def test_the_trl_data_variant_keeps_exactly_the_pairs_trl_keeps(tiny_bert: Path, tmp_path: Path) -> None:
    """`--drop-over N` is TRL's own length filter: the pairs it keeps are the ones RewardTrainer trains on."""
    pytest.importorskip("trl", reason="trl is in the dev extra")
    import transformers as tf
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from bench.training import drop_over
    from training.data import load_pairs

    train = write_records(tmp_path / "train.jsonl", synthetic_records(40))
    tokenizer = tf.AutoTokenizer.from_pretrained(tiny_bert)
    lengths = sorted(len(tokenizer(r["prompt"] + r["chosen"] + "[SEP]")["input_ids"]) for r in synthetic_records(40))
    limit = lengths[len(lengths) // 2]  # about half the pairs are longer on one side
    kept = load_pairs([drop_over(train, limit, str(tiny_bert), tmp_path / "w")])
    config = RewardConfig(output_dir=str(tmp_path / "trl"), max_length=limit, eos_token="[SEP]", use_cpu=True)
    config.report_to = []
    rows = {k: [r[k] for r in synthetic_records(40)] for k in ("prompt", "chosen", "rejected")}
    model = tf.AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=1)
    trainer = RewardTrainer(model=model, args=config, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer)
    trl_kept = trainer.train_dataset
    assert 0 < len(kept) < 40 and len(kept) == len(trl_kept)  # type: ignore[arg-type]
    for key in ("chosen", "rejected"):  # TRL's rows read prompt + completion + EOS
        assert [f"{p.prompt}{getattr(p, key)}[SEP]" for p in kept] == list(trl_kept[key])


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
    assert row["gain_over_first"] == {} and "Gain over" not in table


def test_gains_over_the_first_recipe_are_paired_by_seed() -> None:
    from bench.training import markdown, summarise

    def run(recipe: str, seed: int, a: float) -> dict[str, Any]:
        return {"recipe": recipe, "seed": seed, "pairs_used": 10, "pairs_truncated": 0, "train_seconds": 1.0} | {
            "accuracy": {"a": a},
            "n": {"a": 10},
        }

    # Splits differ a lot (0.5 … 0.7) while the other recipe gains 2 points on each: the pairing sees +2 ± 0.
    runs = [run("ours (left)", s, a) for s, a in enumerate([0.5, 0.6, 0.7])]
    runs += [run("ours (head-tail)", s, a + 0.02) for s, a in enumerate([0.5, 0.6, 0.7])]
    runs += [run("TRL RewardTrainer", 2, 0.6)]  # one seed in common
    left, ht, trl = summarise(runs)
    assert ht["accuracy"]["a"]["sd"] == pytest.approx(0.1) and ht["paired_seeds"] == 3
    assert ht["gain_over_first"]["a"] == pytest.approx({"mean": 0.02, "sd": 0.0}, abs=1e-12)
    assert trl["paired_seeds"] == 1 and trl["gain_over_first"]["pooled"]["mean"] == pytest.approx(-0.1)
    table = markdown([left, ht, trl], "c", "")
    assert "| ours (head-tail) | 3 | +2.0 ± 0.0 | +2.0 ± 0.0 |" in table and "| TRL RewardTrainer | 1 | -10.0" in table
