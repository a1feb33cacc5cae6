"""python -m collect.simulate: which next-pair strategy learns fastest, with human preference files as the oracle.

An offline tool (it imports `training.data` to load and split preference files, which the annotation app never
does). Each text is encoded once by a frozen encoder (collect.embed); the learner is a Bradley–Terry linear head
on those features, refitted after every batch of labels (collect.active). Held-out pairs are a split by prompt.
Writes OUT.json (every run), OUT.md (the table) and OUT.png (the curves).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# One BLAS thread, set before numpy loads: the fits are small, and extra threads only contend on shared cores.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402

from .active import STRATEGIES, Pool, fit_head, oriented, run  # noqa: E402

L2_GRID = (1.0, 10.0, 100.0, 1000.0, 10000.0)

log = logging.getLogger("collect.simulate")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "\n".join(str(m["content"]) for m in value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m collect.simulate", description=__doc__)
    p.add_argument("--data", nargs="+", required=True, help="Preference files (any format training.fit reads).")
    p.add_argument("--skip-invalid", action="store_true")
    p.add_argument("--budgets", type=int, nargs="+", default=[100, 200, 400, 800, 1600])
    p.add_argument("--seeds", type=int, default=5, help="Seeds 0..N-1: each its own split, sides and cold start.")
    p.add_argument("--batch", type=int, default=50, help="Labels acquired between refits.")
    p.add_argument(
        "--l2",
        type=float,
        default=None,
        help="L2 penalty of the linear head (default: chosen once, "
        "for every strategy alike, by 5-fold cross-validation grouped by prompt on seed 0's pool).",
    )
    p.add_argument("--eval-fraction", type=float, default=0.2, help="Share of prompts held out.")
    p.add_argument("--base", default=None, help="Encoder folder (default: all-MiniLM-L6-v2, offline).")
    p.add_argument("--max-length", type=int, default=256, help="Tokens per (prompt, completion) encoding.")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the encoding.")
    p.add_argument("--cache", type=Path, default=Path("/tmp/collect-simulate-features.npz"))
    p.add_argument("--out", type=Path, required=True, help="Output stem: OUT.json, OUT.md, OUT.png.")
    return p


def table(result: dict[str, Any]) -> str:
    budgets = result["budgets"]
    lines = [
        "| strategy | " + " | ".join(f"{b} labels" for b in budgets) + " | mean over budgets |",
        "|---|" + "---:|" * (len(budgets) + 1),
    ]
    for name in STRATEGIES:
        acc = np.array(result["runs"][name]) * 100  # seeds x budgets
        cells = [f"{m:.1f} ± {s:.1f}" for m, s in zip(acc.mean(0), acc.std(0), strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {acc.mean():.1f} |")
    for name in STRATEGIES[1:]:
        diff = (np.array(result["runs"][name]) - np.array(result["runs"]["random"])) * 100
        cells = [f"{m:+.1f} ± {s:.1f}" for m, s in zip(diff.mean(0), diff.std(0), strict=True)]
        lines.append(f"| {name} − random (paired) | " + " | ".join(cells) + f" | {diff.mean():+.1f} |")
    full = np.array(result["all_pool_labels"]) * 100
    lines.append(
        f"\nHeld-out pairwise accuracy (%), mean ± std over {result['seeds']} seeds; L2 {result['l2']:g}, batches of "
        f"{result['batch']}. Every pool pair labelled ({result['pool_pairs']} on average): "
        f"{full.mean():.1f} ± {full.std():.1f}%."
    )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    budgets = result["budgets"]
    for name in STRATEGIES:
        acc = np.array(result["runs"][name]) * 100
        mean, std = acc.mean(0), acc.std(0)
        ax.plot(budgets, mean, marker="o", label=name)
        ax.fill_between(budgets, mean - std, mean + std, alpha=0.15)
    full = float(np.mean(result["all_pool_labels"]) * 100)
    ax.axhline(full, color="grey", linestyle="--", label=f"all {result['pool_pairs']} pool labels")
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("human labels (pairs)")
    ax.set_ylabel("held-out pairwise accuracy (%)")
    ax.set_title(f"Next-pair strategies, mean ± std over {result['seeds']} seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def choose_l2(pool: Pool, groups: np.ndarray) -> tuple[float, dict[str, float]]:
    """The grid's best L2 penalty by 5-fold cross-validation whose folds never split a prompt's pairs."""
    scores = {}
    for l2 in L2_GRID:
        correct = 0
        for k in range(5):
            fit, check = groups != k, groups == k
            w = fit_head(pool.d[fit], pool.y[fit], l2)
            correct += int(np.sum((pool.d[check] @ w > 0) == (pool.y[check] == 1)))
        scores[str(l2)] = round(correct / len(pool.y), 4)
    best = max(L2_GRID, key=lambda v: scores[str(v)])
    log.info("L2 by prompt-grouped 5-fold CV: %s -> %s", scores, best)
    return best, scores


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    from training.data import LoadReport, load_pairs, prompt_bucket, split_by_prompt

    from .embed import default_base, embed

    report = LoadReport()
    pairs = load_pairs(args.data, skip_invalid=args.skip_invalid, report=report)
    texts: dict[tuple[str, str], int] = {}
    for p in pairs:
        for c in (p.chosen, p.rejected):
            texts.setdefault((_text(p.prompt), _text(c)), len(texts))
    base = args.base or default_base()
    features, seconds = embed(list(texts), base, args.max_length, args.cache)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)  # one scale for the L2 penalty

    def side(subset: list[Any], which: str) -> np.ndarray:
        return features[[texts[(_text(p.prompt), _text(getattr(p, which)))] for p in subset]]

    cv: dict[str, float] = {}
    if args.l2 is None:
        train0, _ = split_by_prompt(pairs, args.eval_fraction, 0)
        pool0 = oriented(side(train0, "chosen"), side(train0, "rejected"), np.random.default_rng(0))
        groups = np.array([int(prompt_bucket(p.prompt_key, 1) * 5) for p in train0])
        args.l2, cv = choose_l2(pool0, groups)
    runs: dict[str, list[list[float]]] = {name: [] for name in STRATEGIES}
    full, pool_sizes = [], []
    started = time.perf_counter()
    for seed in range(args.seeds):
        train, held = split_by_prompt(pairs, args.eval_fraction, seed)
        rng = np.random.default_rng(seed)
        pool = oriented(side(train, "chosen"), side(train, "rejected"), rng)
        test = oriented(side(held, "chosen"), side(held, "rejected"), rng)
        pool_sizes.append(len(pool.y))
        for name in STRATEGIES:  # the same generator state per strategy: paired runs, the same cold start
            runs[name].append(run(pool, test, name, args.budgets, np.random.default_rng(seed), args.batch, args.l2))
            log.info("seed %d %-9s %s", seed, name, " ".join(f"{a:.3f}" for a in runs[name][-1]))
        w = fit_head(pool.d, pool.y, args.l2)
        full.append(float(np.mean((test.d @ w > 0) == (test.y == 1))))
    return {
        "command": "python -m collect.simulate " + " ".join(sys.argv[1:]),
        "data": [str(d) for d in args.data],
        "pairs": len(pairs),
        "skipped": dict(report.skipped),
        "texts": len(texts),
        "encoder": base,
        "max_length": args.max_length,
        "encode_seconds": round(seconds, 1),
        "simulate_seconds": round(time.perf_counter() - started, 1),
        "budgets": sorted(args.budgets),
        "seeds": args.seeds,
        "batch": args.batch,
        "l2": args.l2,
        "l2_cross_validation": cv,
        "pool_pairs": int(np.mean(pool_sizes)),
        "runs": runs,
        "all_pool_labels": full,
        "winner": max(STRATEGIES, key=lambda n: float(np.mean(runs[n]))),
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from training.data import DataError

    try:
        result = simulate(args)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    text = table(result)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    plot(result, args.out.with_suffix(".png"))
    print(text + f"\nwinner (highest mean accuracy over the budgets): {result['winner']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
