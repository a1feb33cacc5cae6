"""Fitting and exporting real (tiny) backbones: encoder and decoders, parity, refusals, resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import tiny_fit_argv

from models.bundle import read_bundle
from models.formatting import Formatter
from models.inputs import pad
from models.runtime import BundleScorer
from training.acceptance import screen_int8, torch_rewards
from training.config import parse_config
from training.data import load_pairs, split_by_prompt
from training.evaluate import score_pairs
from training.export import export_bundle
from training.fit import export_job, main, train
from training.graphs import quantize_int8


def test_tiny_fit_separates_synthetic_pairs(tiny_bundle: Path) -> None:
    meta = read_bundle(tiny_bundle).meta
    for precision in ("fp32", "int8"):
        overall = meta.eval_metrics[precision]["overall"]
        assert overall["accuracy"] == 1.0 and overall["n"] > 30
        assert overall["length_baseline"] < 0.8  # the data is not solvable by length
    assert meta.parity.onnx_vs_torch_max_abs <= 1e-4
    assert meta.parity.int8["agreement"] >= 0.98 and meta.parity.int8["scheme"] == "square+contracting"
    summary = meta.training["summary"]
    assert summary["last_logged_loss"] < 0.2 < summary["first_logged_loss"]
    assert meta.reward_stats["fp32"].overall.std > 0 and meta.data_fingerprint


def test_training_changes_parameters_and_bundle_tokenisation_equals_training(
    tiny_bert: Path, synthetic_data: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    cfg, options = parse_config(tiny_fit_argv(tiny_bert, synthetic_data, tmp_path / "b", epochs=1.0))
    pairs, held = split_by_prompt(load_pairs([synthetic_data]), cfg.eval_fraction, cfg.seed)
    before = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=1).state_dict()
    trained = train(cfg, pairs)
    model, tokenizer, spec = trained.model, trained.tokenizer, trained.spec
    after = model.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "classifier.weight" in changed and any("encoder.layer.1" in k for k in changed)
    # The default freezes the lower half (layer 0 of 2) and the embeddings under it.
    assert not any("encoder.layer.0" in k or "embeddings" in k for k in changed)
    assert trained.frozen_layers == 1

    bundle = export_bundle(export_job(cfg, options, trained, pairs, {"held": held}, "fingerprint"))
    from tokenizers import Tokenizer

    training_side = Formatter(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()), spec)
    serving_side = BundleScorer(bundle, "fp32", device="cpu").formatter
    prompts = [p.prompt for p in held] + ["x " * 300]
    completions = [p.chosen for p in held] + ["a long tail " * 40]
    assert training_side.encode_many(prompts, completions) == serving_side.encode_many(prompts, completions)

    # Parity, measured independently of the export's own check: ONNX fp32 vs the torch model.
    encoded = serving_side.encode_many(prompts, completions)
    onnx_scores = BundleScorer(bundle, "fp32", device="cpu").score_encoded(encoded)
    torch_scores = torch_rewards(model, encoded, tokenizer.pad_token_id)
    assert np.max(np.abs(onnx_scores - torch_scores)) <= 1e-4


def test_failed_parity_or_agreement_writes_no_bundle(
    tiny_bert: Path, synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "refused"
    argv = tiny_fit_argv(tiny_bert, synthetic_data, out, epochs=1, max_length=32, calibration_pairs=8)
    assert main([*argv, "--parity-atol", "1e-12"]) == 1
    assert "differs from torch" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--min-int8-agreement", "1.01"]) == 1
    assert "int8 agrees with fp32" in capsys.readouterr().err and not out.exists()


def test_int8_screen_equals_a_full_evaluation_or_stops_once_failure_is_certain(
    tiny_bundle: Path, synthetic_data: Path
) -> None:
    bundle = read_bundle(tiny_bundle)
    pairs = load_pairs([synthetic_data])[:150]
    fp32_c, fp32_r, _ = score_pairs(BundleScorer(bundle, "fp32", device="cpu"), pairs)
    int8 = BundleScorer(bundle, "int8", device="cpu")
    want_c, want_r, _ = score_pairs(int8, pairs)
    got, flipped, screened = screen_int8(int8, pairs, {"chosen": fp32_c, "rejected": fp32_r}, 0.9, chunk=16)
    assert got is not None and screened == len(pairs)
    assert np.array_equal(got["chosen"], want_c) and np.array_equal(got["rejected"], want_r)  # order restored
    assert flipped == int(np.sum(np.sign(want_c - want_r) != np.sign(fp32_c - fp32_r)))
    # A reference that prefers the other answer of every pair: 16 flips in 150 already rule out 90% agreement.
    swapped = {"chosen": fp32_r, "rejected": fp32_c}
    assert screen_int8(int8, pairs, swapped, 0.9, chunk=16) == (None, 16, 16)


def test_int8_calibration_cache_gives_the_graph_a_fresh_calibration_gives(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = read_bundle(tiny_bundle)
    scorer = BundleScorer(bundle, "fp32", device="cpu")
    texts = [f"question {i} " + "word " * (i % 9) for i in range(32)]
    feeds = [pad([e], bundle.meta.pad_token_id, scorer.input_names) for e in scorer.encode(texts, texts[::-1])]
    fp32, cache = bundle.model_path("fp32"), tmp_path / "calibration.json"
    quantize_int8(fp32, tmp_path / "wide.onnx", feeds, "square+contracting", cache=cache)
    assert cache.is_file()
    counts = quantize_int8(fp32, tmp_path / "cached.onnx", [], "square", cache=cache)  # no data: the cache serves
    assert counts["quantized_matmuls"] > 0
    quantize_int8(fp32, tmp_path / "fresh.onnx", feeds, "square")
    assert (tmp_path / "cached.onnx").read_bytes() == (tmp_path / "fresh.onnx").read_bytes()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_decoder_backbones_fit_and_export(
    family: str, tiny_llama: Path, tiny_gpt2: Path, synthetic_data: Path, tmp_path: Path
) -> None:
    base = tiny_llama if family == "llama" else tiny_gpt2
    out = tmp_path / family
    assert (
        main(
            [
                "--base",
                str(base),
                "--data",
                str(synthetic_data),
                "--out",
                str(out),
                "--epochs",
                "4",
                "--lr",
                "3e-3",
                "--batch-size",
                "16",
                "--max-length",
                "48",
                "--no-plot",
                "--bf16",
                "off",
                "--calibration-pairs",
                "32",
                "--min-int8-agreement",
                "0.9",
            ]
        )
        == 0
    )
    bundle = read_bundle(out)
    meta = bundle.meta
    assert meta.architecture == "decoder"
    assert meta.formatting.kind == ("chat" if family == "llama" else "concat")
    assert meta.onnx_inputs == ["input_ids", "attention_mask"]
    assert meta.parity.onnx_vs_torch_max_abs <= 1e-4
    assert meta.eval_metrics["fp32"]["overall"]["accuracy"] >= 0.9
    scorer = BundleScorer(bundle, "fp32", device="cpu")
    alone = scorer.score(["Question 1: tell me about tea."], ["tea is kind."])
    padded = scorer.score(
        ["Question 1: tell me about tea.", "q " * 40], ["tea is kind.", "long " * 30], max_batch_size=2
    )
    assert abs(alone[0] - padded[0]) <= 1e-6  # right padding never reaches the reward token


def test_resume_continues_from_the_last_checkpoint(tiny_bert: Path, synthetic_data: Path, tmp_path: Path) -> None:
    argv = [
        "--base",
        str(tiny_bert),
        "--data",
        str(synthetic_data),
        "--out",
        str(tmp_path / "r"),
        "--epochs",
        "2",
        "--max-length",
        "32",
        "--batch-size",
        "16",
        "--save-steps",
        "5",
        "--no-plot",
        "--no-int8",
    ]
    assert main(argv) == 0
    first = read_bundle(tmp_path / "r").meta.training["summary"]
    assert main([*argv, "--epochs", "3", "--resume"]) == 0
    resumed = read_bundle(tmp_path / "r").meta.training["summary"]
    assert resumed["resumed_from"] and resumed["resumed_from"].endswith(f"checkpoint-{first['steps']}")
    assert resumed["steps"] > first["steps"]


def test_cli_help_explains_every_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "training.fit", "--help"], capture_output=True, text=True, check=True)
    for flag in (
        "--data",
        "--out",
        "--base",
        "--eval-data",
        "--eval-fraction",
        "--epochs",
        "--lr",
        "--batch-size",
        "--max-length",
        "--seed",
        "--resume",
        "--center-rewards-coefficient",
        "--skip-invalid",
    ):
        assert flag in out.stdout


def test_resume_skips_a_checkpoint_interrupted_while_saving(tmp_path: Path) -> None:
    from training.fit import _last_checkpoint

    for step, complete in ((10, True), (20, True), (30, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
        if complete:
            (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    (tmp_path / "checkpoint-40").mkdir()
    (tmp_path / "checkpoint-40" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
    assert _last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert _last_checkpoint(str(tmp_path / "missing")) is None
