"""Evaluation metrics against hand-computed values, and the CLI over a real bundle."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from models.bundle import read_bundle
from models.formatting import Encoded
from models.runtime import BundleScorer
from training.data import PreferencePair
from training.evaluate import main, pair_metrics, rankdata, score_pairs, spearman


def test_rankdata_and_spearman_match_definitions() -> None:
    assert rankdata(np.array([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)


def test_pair_metrics_count_ties_as_wrong() -> None:
    pairs = [PreferencePair("p", "long answer", "no"), PreferencePair("p", "a", "bbb"), PreferencePair("p", "x", "yy")]
    m = pair_metrics(pairs, np.array([1.0, 0.5, 2.0]), np.array([0.0, 0.5, 3.0]))
    assert m["accuracy"] == pytest.approx(1 / 3)  # the tie (0.5 vs 0.5) is wrong
    assert m["length_baseline"] == pytest.approx(1 / 3)
    assert m["mean_margin"] == pytest.approx((1 + 0 - 1) / 3)
    assert m["n"] == 3


def test_texts_repeated_across_pairs_are_scored_once_with_the_same_rewards(tiny_bundle: Path) -> None:
    answers = ["tea is glad and kind.", "tea is fine.", "tea is junk.", "tea is rude and wrong."]
    pairs = [PreferencePair("Tell me about tea.", a, b) for i, a in enumerate(answers) for b in answers[i + 1 :]]
    pairs.append(PreferencePair("Tell me about maps.", "maps are clear.", "maps are junk."))
    scorer = BundleScorer(read_bundle(tiny_bundle), "fp32", device="cpu")
    ran: list[int] = []
    run = scorer.run

    def counting_run(batch: Sequence[Encoded]) -> np.ndarray:
        ran.append(len(batch))
        return run(batch)

    scorer.run = counting_run  # type: ignore[method-assign]
    chosen, rejected, _ = score_pairs(scorer, pairs)
    assert sum(ran) == 4 + 2  # 14 texts in the pairs, 6 distinct
    for i, p in enumerate(pairs):
        alone = scorer.score([p.prompt, p.prompt], [p.chosen, p.rejected], max_batch_size=1)
        np.testing.assert_allclose([chosen[i], rejected[i]], alone, atol=1e-5)


def test_cli_scores_the_bundle_and_writes_json_and_png(tiny_bundle: Path, synthetic_data: Path, tmp_path: Path) -> None:
    report_path, plot = tmp_path / "report.json", tmp_path / "eval.png"
    assert (
        main(
            [
                "--model-dir",
                str(tiny_bundle),
                "--data",
                str(synthetic_data),
                "--json",
                str(report_path),
                "--plot",
                str(plot),
                "--precision",
                "fp32",
                "--held-out",
            ]
        )
        == 0
    )
    report = json.loads(report_path.read_text())
    assert set(report["overall"]) >= {"accuracy", "length_baseline", "n", "mean_margin", "length_spearman"}
    assert report["files"][str(synthetic_data)]["accuracy"] == 1.0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # --held-out re-applies the fit's prompt split: the same pairs the bundle's own eval metrics used.

    assert report["overall"]["n"] == read_bundle(tiny_bundle).meta.eval_metrics["fp32"]["overall"]["n"]


def test_cli_refuses_bad_bundles_and_data_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model-dir", str(tmp_path / "none"), "--data", "x.jsonl"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
