"""python -m training.export on every supported family: bundle scores equal transformers' documented usage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reward_models import DECODERS, FAMILIES, documented_score, make_reward_model

from models.bundle import read_bundle
from models.runtime import BundleScorer
from training.export import main

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
        limit = 1e-4 if precision == "fp32" else bundle.meta.parity["fp16"]["limit"]
        diff = float(np.max(np.abs(alone - want)))
        print(f"PARITY {family} {precision} max|bundle - transformers| = {diff:.2e}")
        assert diff <= limit, (precision, diff)
    head = bundle.meta.reward_head
    assert head["family"] == family.replace("-", "_") or head["family"] == family
    kind = "pair" if family not in DECODERS else ("chat" if DECODERS[family][4] else "concat")
    assert bundle.meta.formatting.kind == kind and bundle.meta.reward_stats == {}
