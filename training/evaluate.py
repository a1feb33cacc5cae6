"""python -m training.evaluate: score held-out pairs from an exported bundle with ONNX Runtime and report metrics.

It scores through models.runtime.BundleScorer — the service's own code path — never the torch model. Per file
and overall: pairwise accuracy (a tie counts as wrong), the "longer answer wins" baseline on the same pairs,
mean reward margin, and the Spearman correlation between reward and completion length (a length-bias sign).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import MODEL_FILES, BundleError, BundleMeta, read_bundle
from models.formatting import Encoded, dedupe
from models.messages import completion_text
from models.objectives import combine
from models.runtime import BundleScorer
from models.serving import open_checked

from .data import DataError, LoadReport, PreferencePair, load_pairs, split_by_prompt


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties sharing their average rank (as scipy.stats.rankdata)."""
    sorter = np.argsort(values, kind="mergesort")
    inverse = np.empty_like(sorter)
    inverse[sorter] = np.arange(len(values))
    ordered = values[sorter]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = first.cumsum()[inverse]
    bounds = np.r_[np.nonzero(first)[0], len(first)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return float("nan")
    ra, rb = rankdata(np.asarray(a, dtype=np.float64)), rankdata(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def pair_metrics(pairs: Sequence[PreferencePair], chosen: np.ndarray, rejected: np.ndarray) -> dict[str, float]:
    """Metrics for one set of pairs given their chosen and rejected rewards."""
    len_c = np.array([len(completion_text(p.chosen)) for p in pairs], dtype=np.float64)
    len_r = np.array([len(completion_text(p.rejected)) for p in pairs], dtype=np.float64)
    rewards = np.concatenate([chosen, rejected]).astype(np.float64)
    return {
        "n": len(pairs),
        "accuracy": float(np.mean(chosen > rejected)),
        "length_baseline": float(np.mean(len_c > len_r)),
        "mean_margin": float(np.mean(chosen.astype(np.float64) - rejected)),
        "length_spearman": spearman(rewards, np.concatenate([len_c, len_r])),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()),
    }


def encode_pairs(scorer: BundleScorer, pairs: Sequence[PreferencePair]) -> list[Encoded]:
    """Every pair's (prompt, chosen) input, then every pair's (prompt, rejected): the layout all scoring here uses."""
    prompts = [p.prompt for p in pairs]
    return scorer.encode(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])


def score_pairs(scorer: BundleScorer, pairs: Sequence[PreferencePair]) -> tuple[np.ndarray, np.ndarray, int]:
    """(chosen rewards, rejected rewards, number of truncated texts) for pairs, through the bundle."""
    encoded = encode_pairs(scorer, pairs)
    distinct, index = dedupe(encoded)  # ranked data repeats texts: 4 answers -> 6 pairs, 8 texts, 4 distinct
    rewards = scorer.score_encoded(distinct)[index]
    return rewards[: len(pairs)], rewards[len(pairs) :], sum(e.truncated for e in encoded)


def evaluate(
    scorer: BundleScorer, files: Mapping[str, Sequence[PreferencePair]], weights: Mapping[str, float] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Report {"overall": {...}, "files": {name: {...}}} and the raw rewards (for plots and agreement checks); a
    multi-objective bundle's report is of its combined reward, plus every head on every file ("objectives")."""
    scored = {n: score_pairs(scorer, pairs) for n, pairs in files.items() if pairs}
    return build_report(scorer.precision, files, scored, scorer.bundle.meta, weights)


def build_report(
    precision: str,
    files: Mapping[str, Sequence[PreferencePair]],
    scored: Mapping[str, tuple[np.ndarray, np.ndarray, int]],
    meta: BundleMeta | None = None,
    weights: Mapping[str, float] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """evaluate's report from rewards already computed: `scored[name]` is score_pairs' answer for files[name].

    The rewards returned are as scored ((n, k) for k objectives); the metrics are of the combined reward, with each
    head's accuracy on each file beside them."""
    report: dict[str, Any] = {"precision": precision, "files": {}}
    all_pairs: list[PreferencePair] = []
    parts_c, parts_r = [], []
    truncated = 0
    for name, pairs in files.items():
        if not pairs:
            continue
        chosen, rejected, cut = scored[name]
        combined = [combine(r, meta, weights) if meta is not None else r for r in (chosen, rejected)]
        report["files"][name] = pair_metrics(pairs, *combined) | {"truncated_texts": cut}
        all_pairs.extend(pairs)
        parts_c.append(chosen)
        parts_r.append(rejected)
        truncated += cut
    if not all_pairs:
        raise DataError("no pairs to evaluate")
    chosen, rejected = np.concatenate(parts_c), np.concatenate(parts_r)
    combined = [combine(r, meta, weights) if meta is not None else r for r in (chosen, rejected)]
    report["overall"] = pair_metrics(all_pairs, *combined) | {"truncated_texts": truncated}
    if meta is not None and chosen.ndim == 2:
        report["objectives"] = objective_matrix(files, scored, meta)
    return report, {"chosen": chosen, "rejected": rejected}


def objective_matrix(
    files: Mapping[str, Sequence[PreferencePair]],
    scored: Mapping[str, tuple[np.ndarray, np.ndarray, int]],
    meta: BundleMeta,
) -> dict[str, Any]:
    """Every head on every file: {objective: {"files": {file: accuracy}, "accuracy", "reward_mean", "reward_std"}},
    so a user sees which head ranks which data."""
    out: dict[str, Any] = {}
    for k, objective in enumerate(meta.objectives):
        per_file, wins, rewards = {}, [], []
        for name, pairs in files.items():
            if pairs:
                chosen, rejected, _ = scored[name]
                per_file[name] = float(np.mean(chosen[:, k] > rejected[:, k]))
                wins.append(chosen[:, k] > rejected[:, k])
                rewards += [chosen[:, k], rejected[:, k]]
        values = np.concatenate(rewards).astype(np.float64)
        out[objective] = {
            "files": per_file,
            "accuracy": float(np.mean(np.concatenate(wins))),
            "reward_mean": float(values.mean()),
            "reward_std": float(values.std()),
        }
    return out


def write_plot(path: Path, pairs: Sequence[PreferencePair], rewards: Mapping[str, np.ndarray], title: str) -> None:
    """Reward histograms of chosen vs rejected, and reward vs completion length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen, rejected = rewards["chosen"], rewards["rejected"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bins = np.linspace(min(chosen.min(), rejected.min()), max(chosen.max(), rejected.max()), 40)
    left.hist(chosen, bins=bins, alpha=0.6, label="chosen", color="tab:green")
    left.hist(rejected, bins=bins, alpha=0.6, label="rejected", color="tab:red")
    left.set_xlabel("reward")
    left.set_ylabel("texts")
    left.legend()
    left.set_title(f"accuracy {np.mean(chosen > rejected):.1%} over {len(chosen)} pairs")
    lengths = [len(completion_text(p.chosen)) for p in pairs] + [len(completion_text(p.rejected)) for p in pairs]
    right.scatter(np.maximum(lengths, 1), np.concatenate([chosen, rejected]), s=4, alpha=0.35)
    right.set_xscale("log")
    right.set_xlabel("completion length (characters)")
    right.set_ylabel("reward")
    right.set_title("reward vs length")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_report(report: Mapping[str, Any]) -> str:
    lines = [f"{'file':<50} {'n':>6} {'acc':>7} {'len-base':>8} {'margin':>8} {'ρ(len)':>7}"]
    rows = [*report["files"].items(), ("overall", report["overall"])]
    for name, m in rows:
        lines.append(
            f"{Path(name).name[:50]:<50} {m['n']:>6} {m['accuracy']:>7.1%} {m['length_baseline']:>8.1%} "
            f"{m['mean_margin']:>8.3f} {m['length_spearman']:>7.3f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="Bundle folder written by training.fit.")
    parser.add_argument("--data", nargs="+", required=True, help="Preference files to score.")
    parser.add_argument("--json", help="Write the report as JSON to this path.")
    parser.add_argument("--plot", help="Write a PNG (reward histograms, reward vs length) to this path.")
    parser.add_argument("--precision", choices=sorted(MODEL_FILES), help="Default: the service's default.")
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="Keep only pairs the fit held out (re-applies its prompt split: fraction and seed from the bundle).",
    )
    parser.add_argument("--skip-invalid", action="store_true", help="Skip malformed records instead of failing.")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores).")
    args = parser.parse_args(argv)
    try:
        bundle = read_bundle(args.model_dir)
        scorer = open_checked(bundle, args.precision, intra_op_threads=args.threads, check="off").scorer
        files = {}
        for path in args.data:
            pairs = load_pairs([path], skip_invalid=args.skip_invalid, report=LoadReport())
            if args.held_out:
                cfg = bundle.meta.training
                _, pairs = split_by_prompt(pairs, float(cfg.get("eval_fraction", 0.2)), int(cfg.get("seed", 0)))
            files[path] = pairs
        report, rewards = evaluate(scorer, files)
    except (BundleError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        pairs_all = [p for pairs in files.values() for p in pairs]
        write_plot(Path(args.plot), pairs_all, rewards, f"{bundle.meta.model_id} ({scorer.precision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
