"""python -m training.export on every supported family: bundle scores equal transformers' documented usage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reward_models import DECODERS, FAMILIES, documented_score, make_reward_model

from models.bundle import read_bundle
from models.runtime import BundleScorer
from training.export.__main__ import main

PROMPTS = ["Question 1: tell me something about tea.", "Question 2: tell me something about maps and stars?", "hi"]
COMPLETIONS = ["tea is kind.", "maps is awful wrong useless nonsense junk, and stars is glad.", "sure"]


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_bundle_scores_as_transformers_does(
    family: str, minilm_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import transformers as tf

    source = make_reward_model(tmp_path / "hf", family, minilm_path)
    append_eos = family == "gpt2"  # TRL-style plain text ends in EOS, which is also GPT-2's pad: transformers'
    # rule then reads the token before it, and so must the bundle
    argv = ["--model", str(source), "--out", str(tmp_path / "bundle"), "--max-length", "120"]
    assert main(argv + (["--append-eos"] if append_eos else [])) == 0
    bundle = read_bundle(tmp_path / "bundle")
    model = tf.AutoModelForSequenceClassification.from_pretrained(source).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(source)
    want = np.array(
        [
            documented_score(model, tokenizer, family, p, c, append_eos)
            for p, c in zip(PROMPTS, COMPLETIONS, strict=True)
        ]
    )
    for precision in bundle.meta.precisions:
        scorer = BundleScorer(bundle, precision, device="cpu")
        alone = np.array([scorer.score([p], [c])[0] for p, c in zip(PROMPTS, COMPLETIONS, strict=True)])
        batched = scorer.score(PROMPTS, COMPLETIONS, max_batch_size=8)  # one padded batch of mixed lengths
        assert np.max(np.abs(batched - alone)) <= 1e-5, precision
        limit = 1e-4 if precision == "fp32" else bundle.meta.parity.fp16.limit
        diff = float(np.max(np.abs(alone - want)))
        print(f"PARITY {family} {precision} max|bundle - transformers| = {diff:.2e}")
        assert diff <= limit, (precision, diff)
    head = bundle.meta.reward_head
    assert head is not None and head.family in (family.replace("-", "_"), family)
    kind = "pair" if family not in DECODERS else ("chat" if DECODERS[family][4] else "concat")
    assert bundle.meta.formatting.kind == kind and bundle.meta.reward_stats == {}


def test_an_imported_decoder_serves_batch_invariant_and_says_how(minilm_path: str, tmp_path: Path) -> None:
    from servers import make_client

    source = make_reward_model(tmp_path / "hf", "llama", minilm_path)
    assert main(["--model", str(source), "--out", str(tmp_path / "b"), "--precisions", "fp32"]) == 0
    items = [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    with make_client(tmp_path / "b", precision="fp32", max_wait_ms=50) as c:
        together = c.post("/score", json={"items": items}).json()["scores"]
        alone = [c.post("/score", json={"items": [it]}).json()["scores"][0] for it in items]
        assert np.max(np.abs(np.array(together) - np.array(alone))) <= 1e-5
        info = c.get("/info").json()
        assert info["formatting"] == "chat" and info["reward_head"]["family"] == "llama"
        assert "pad id" in info["reward_head"]["read_at"] and info["normalization"] is None
        refused = c.post("/score", json={"items": items[:1], "normalize": True})
        assert refused.status_code == 422 and "no reward statistics" in refused.json()["error"]


def test_weights_over_the_limit_go_to_one_data_file_the_bundle_covers(
    minilm_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.bundle import BundleError

    source = make_reward_model(tmp_path / "hf", "qwen2", minilm_path)
    out = tmp_path / "big"
    assert main(["--model", str(source), "--out", str(out), "--external-data-bytes", "1000"]) == 0
    bundle = read_bundle(out)
    assert {"model.onnx.data", "model.fp16.onnx.data"} <= set(bundle.meta.files)  # hashed like the graphs
    import onnx

    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    assert sum(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer) > 10
    small = tmp_path / "small"
    assert main(["--model", str(source), "--out", str(small)]) == 0
    prompts, completions = PROMPTS, COMPLETIONS
    big_scores = BundleScorer(bundle, "fp32", device="cpu").score(prompts, completions)
    assert np.array_equal(
        big_scores, BundleScorer(read_bundle(small), "fp32", device="cpu").score(prompts, completions)
    )
    with open(out / "model.onnx.data", "r+b") as f:
        f.seek(64)
        f.write(b"\x00" * 8)
    with pytest.raises(BundleError, match=r"model\.onnx\.data: file is corrupt"):
        read_bundle(out)


def test_eval_data_gives_metrics_int8_and_normalisation(minilm_path: str, synthetic_data: Path, tmp_path: Path) -> None:
    source = make_reward_model(tmp_path / "hf", "bert", minilm_path)
    out = tmp_path / "b"
    argv = ["--model", str(source), "--out", str(out), "--eval-data", str(synthetic_data), "--max-length", "64"]
    assert main([*argv, "--precisions", "fp32,int8,fp16", "--min-int8-agreement", "0.5"]) == 0
    meta = read_bundle(out).meta
    assert set(meta.precisions) >= {"fp32", "int8"} and meta.eval_metrics["split"] == "eval_data"
    print("imported bert int8:", {k: v for k, v in meta.parity.int8.items() if not isinstance(v, dict | list)})
    assert meta.reward_stats["fp32"].overall.std > 0 and meta.eval_metrics["fp32"]["overall"]["n"] == 240


def test_what_cannot_be_served_faithfully_is_refused(
    minilm_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import transformers as tf

    source = make_reward_model(tmp_path / "hf", "bert", minilm_path)
    config = tf.AutoConfig.from_pretrained(source, id2label={0: "helpful", 1: "harmless"})
    tf.AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "two")
    tf.AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path / "two")
    # Several labels become objectives (one reward each); --label-index picks one as the reward instead.
    assert main(["--model", str(tmp_path / "two"), "--out", str(tmp_path / "x"), "--precisions", "fp32"]) == 0
    assert read_bundle(tmp_path / "x").meta.objectives == ["helpful", "harmless"]
    assert main(["--model", str(tmp_path / "two"), "--out", str(tmp_path / "y"), "--label-index", "1"]) == 0
    assert read_bundle(tmp_path / "y").meta.reward_head.extra["label"] == "harmless"
    config = (tmp_path / "two" / "config.json").read_text().replace("BertForSequenceClassification", "BertRewardHead")
    (tmp_path / "two" / "config.json").write_text(config)
    assert main(["--model", str(tmp_path / "two"), "--out", str(tmp_path / "z"), "--label-index", "1"]) == 2
    assert "BertRewardHead is a custom reward head" in capsys.readouterr().err
    assert main(["--model", str(source), "--out", str(tmp_path / "w"), "--precisions", "int8"]) == 1
    assert "int8 needs evaluation pairs" in capsys.readouterr().err


def test_a_trl_trained_reward_model_round_trips(minilm_path: str, tmp_path: Path) -> None:
    """The tutorial's way: TRL's RewardTrainer on {"question", "chosen", "rejected"} records, then export, serve."""
    pytest.importorskip("trl", reason="trl is in the dev extra")
    import json

    import transformers as tf
    from builders import synthetic_records
    from datasets import Dataset
    from servers import make_client
    from trl import RewardConfig, RewardTrainer

    from training.data import load_pairs

    tutorial = [
        {"question": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in synthetic_records(24)
    ]
    tutorial[0] = {"question": "Python中的列表是什么？", "chosen": "列表是有序、可变的序列。", "rejected": "一种东西。"}
    (tmp_path / "prefs.json").write_text(json.dumps(tutorial, ensure_ascii=False), encoding="utf-8")
    pairs = load_pairs([tmp_path / "prefs.json"])
    rows = {
        "prompt": [[{"role": "user", "content": p.prompt}] for p in pairs],
        "chosen": [[{"role": "assistant", "content": p.chosen}] for p in pairs],
        "rejected": [[{"role": "assistant", "content": p.rejected}] for p in pairs],
    }
    base = make_reward_model(tmp_path / "base", "qwen2", minilm_path)
    args = RewardConfig(
        output_dir=str(tmp_path / "trl"),
        max_steps=3,
        per_device_train_batch_size=4,
        use_cpu=True,
        bf16=False,
        report_to="none",
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
    )
    trainer = RewardTrainer(
        model=str(base),
        args=args,
        train_dataset=Dataset.from_dict(rows),
        processing_class=tf.AutoTokenizer.from_pretrained(base),
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "trained"))
    trainer.processing_class.save_pretrained(str(tmp_path / "trained"))
    assert main(["--model", str(tmp_path / "trained"), "--out", str(tmp_path / "b"), "--precisions", "fp32"]) == 0

    model = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "trained").eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(tmp_path / "trained")
    items = [
        {"prompt": r["prompt"], "completion": r["chosen"]}
        for r in ({"prompt": rows["prompt"][i], "chosen": rows["chosen"][i]} for i in range(4))
    ]
    import torch

    with torch.no_grad():
        trl_scores = [
            float(
                model(
                    **tokenizer.apply_chat_template(
                        it["prompt"] + it["completion"], tokenize=True, return_dict=True, return_tensors="pt"
                    )
                ).logits[0, 0]
            )
            for it in items
        ]
    with make_client(tmp_path / "b", precision="fp32") as c:
        served = c.post("/score", json={"items": items}).json()["scores"]
    assert served == pytest.approx(trl_scores, abs=1e-4)
    assert len(set(np.round(served, 4))) > 1  # trained: not a constant
