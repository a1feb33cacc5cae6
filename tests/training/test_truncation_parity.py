"""Both truncation policies end to end: the fit records its policy, and the service cuts a long prompt token for token
as training did (a two-objective head-tail fit and the session's left bundle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builders import synthetic_records, tiny_fit_argv, write_records
from servers import make_client

from models.bundle import read_bundle
from models.formatting import Formatter
from models.objectives import combine
from models.runtime import BundleScorer
from training.data import PreferencePair
from training.tokens import backend, format_spec
from training.trainer import PairDataset

FILLER = " ".join(f"Passage {i} mentions weather on day {i}." for i in range(30))


def long_records(n: int, seed: int) -> list[dict[str, str]]:
    """Synthetic pairs whose prompts put the question first and a long passage after it (all over 64 tokens)."""
    return [r | {"prompt": f"{r['prompt']}\n\n{FILLER}"} for r in synthetic_records(n, seed)]


@pytest.fixture(scope="module")
def head_tail_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    """A two-objective fit with --truncation head-tail on half long-prompt data (1 epoch: only tokens matter here)."""
    from training.fit import main

    folder = tmp_path_factory.mktemp("head-tail")
    helpful = write_records(folder / "helpful.jsonl", synthetic_records(60) + long_records(60, 1))
    harmless = write_records(folder / "harmless.jsonl", synthetic_records(60, 2) + long_records(60, 3))
    out = folder / "bundle"
    argv = tiny_fit_argv(tiny_bert, helpful, out, truncation="head-tail", epochs=1, int8=False, fp16=False)
    data = argv.index("--data")
    argv[data + 1 : data + 2] = [f"helpful={helpful}", f"harmless={harmless}"]
    assert main(argv) == 0
    return out


@pytest.mark.parametrize("policy", ["left", "head-tail"])
def test_training_and_service_cut_long_prompts_identically(
    policy: str, tiny_bert: Path, tiny_bundle: Path, head_tail_bundle: Path
) -> None:
    from transformers import AutoTokenizer

    path = head_tail_bundle if policy == "head-tail" else tiny_bundle
    bundle = read_bundle(path)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    spec = format_spec(tokenizer, "encoder", 64, truncation=policy)
    assert bundle.meta.formatting == spec  # what training formatted with is what the bundle records
    if policy == "head-tail":  # multi-objective fits take the same policy, and it cut their training pairs
        assert bundle.meta.objectives == ["helpful", "harmless"]
        assert bundle.meta.training["summary"]["truncated_train_pairs"] > 0

    records = long_records(6, 7) + synthetic_records(2, 8)
    pairs = [PreferencePair(r["prompt"], r["chosen"], r["rejected"]) for r in records]
    trained = PairDataset(pairs, Formatter(backend(tokenizer), spec))
    training_ids = [item["chosen"] for item in trained.items]
    scorer = BundleScorer(bundle, "fp32", device="cpu")
    served = scorer.formatter.encode_many([p.prompt for p in pairs], [p.chosen for p in pairs])
    assert served == training_ids and sum(e.truncated for e in served) == 6

    # The question (at the top) survives head-tail and is lost to left; the marker counts in the 64 tokens.
    question = tokenizer(records[0]["prompt"].split("\n")[0], add_special_tokens=False)["input_ids"]
    first = served[0].ids
    kept = any(first[i : i + len(question)] == question for i in range(len(first)))
    assert kept == (policy == "head-tail") and len(first) == 64

    with make_client(path, precision="fp32", max_wait_ms=5) as client:
        info = client.get("/info").json()
        assert info["truncation"] == policy
        items = [{"prompt": p.prompt, "completion": p.chosen} for p in pairs]
        body = client.post("/score", json={"items": items}).json()
    assert body["truncated"] == 6
    # The service's rewards are those of the very ids training built (heads combined by the bundle's weights).
    assert np.allclose(body["scores"], combine(scorer.score_encoded(training_ids), bundle.meta), atol=1e-5)


def test_the_fit_refuses_head_tail_for_a_decoder(tiny_gpt2: Path, synthetic_data: Path, tmp_path: Path) -> None:
    from training.fit import main

    argv = tiny_fit_argv(tiny_gpt2, synthetic_data, tmp_path / "b", truncation="head-tail", epochs=0.1)
    assert main(argv) == 2 and not (tmp_path / "b").exists()


def test_an_imported_encoder_takes_the_policy_and_a_decoder_refuses_head_tail(tiny_bert: Path, tiny_gpt2: Path) -> None:
    from training.imported import ImportRefused, load_reward_model

    assert load_reward_model(str(tiny_bert), truncation="head-tail").spec.truncation == "head-tail"
    assert load_reward_model(str(tiny_bert)).spec.truncation == "left"
    with pytest.raises(ImportRefused, match="--truncation 'head-tail' needs the text-pair formatting"):
        load_reward_model(str(tiny_gpt2), truncation="head-tail")
