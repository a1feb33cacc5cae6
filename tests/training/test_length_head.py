"""Length control (--length-head): the penalty, and real fits on data where the longer answer tends to win."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from builders import BAD, GOOD, TOPICS, tiny_fit_argv, write_records

from models.bundle import read_bundle
from training.fit import main
from training.loss import length_penalty


def test_length_penalty_is_zero_for_a_head_that_ignores_length() -> None:
    lengths = torch.tensor([10.0, 20.0, 30.0, 40.0])
    log_length = torch.log1p(lengths)
    z = (log_length - log_length.mean()) / log_length.std(unbiased=False)
    ignores = torch.tensor([1.0, -1.0, -1.0, 1.0]) * 3
    ignores = ignores - (ignores * z).mean() * z  # exactly uncorrelated with the log-lengths
    assert length_penalty(ignores, lengths).item() == pytest.approx(0.0, abs=1e-10)
    assert length_penalty(2 * z, lengths).item() == pytest.approx(4.0)  # 2 reward per std of log-length, squared
    assert length_penalty(torch.stack([ignores, 2 * z], dim=1), lengths).item() == pytest.approx(2.0)  # mean of heads
    assert length_penalty(torch.ones(4), torch.full((4,), 7.0)).item() == 0.0  # constant lengths: nothing to follow
    quality = (2 * z).clone().requires_grad_(True)
    length_penalty(quality, lengths).backward()
    assert quality.grad is not None and torch.isfinite(quality.grad).all()


def length_confounded_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Content decides (friendly beats hostile), and the chosen answer also tends to be the longer one (not always:
    where content and length were one signal, no head could take one without the other)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        good = " ".join(rng.choice(GOOD) for _ in range(rng.randint(3, 10)))
        bad = " ".join(rng.choice(BAD) for _ in range(rng.randint(1, 7)))
        prompt = f"Question {i}: tell me something about {topic}."
        records.append({"prompt": prompt, "chosen": f"{topic} is {good}.", "rejected": f"{topic} is {bad}."})
    return records


@pytest.fixture(scope="module")
def fits(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> dict[float, Path]:
    """The same fit without and with the length head."""
    folder = tmp_path_factory.mktemp("length_head")
    data = write_records(folder / "confounded.jsonl", length_confounded_records(240))
    out = {}
    for weight in (0.0, 1.0):
        out[weight] = folder / f"bundle-{weight}"
        argv = tiny_fit_argv(tiny_bert, data, out[weight], length_head=weight, min_int8_agreement=0.9)
        assert main(argv) == 0
    return out


def test_the_length_head_takes_the_length_preference_and_is_not_served(fits: dict[float, Path]) -> None:
    plain, controlled = read_bundle(fits[0.0]).meta, read_bundle(fits[1.0]).meta
    summary = controlled.training["summary"]
    assert summary["length_head"] == 1.0 and summary["length_coefficient"] > 0  # it learned "longer wins"
    assert "length_coefficient" not in plain.training["summary"]
    # Served exactly like any one-reward bundle: the same graph outputs and head description, no trace of it.
    for bundle in fits.values():
        outputs = onnx.load(str(bundle / "model.onnx")).graph.output
        assert [o.name for o in outputs] == ["reward"] and len(outputs[0].type.tensor_type.shape.dim) == 1
    assert controlled.reward_head == plain.reward_head
    assert "length_coef" not in json.dumps(controlled.files)
    before, after = plain.eval_metrics["fp32"]["overall"], controlled.eval_metrics["fp32"]["overall"]
    print(
        f"held-out accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}; "
        f"Spearman(reward, length) {before['length_spearman']:.2f} -> {after['length_spearman']:.2f}"
    )
    assert after["length_spearman"] < before["length_spearman"] - 0.2  # the served reward follows length less
    assert after["accuracy"] >= 0.9  # and still ranks the content
