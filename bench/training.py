"""python -m bench.training: our fit (per truncation policy) and TRL's own RewardTrainer on one backbone, the same
data and the same prompt split, over seeds: pairs used, training time, per-file held-out accuracy (mean ± spread).

Each seed draws its own prompt split (as `training.fit --seed` does) and every recipe of that seed trains on it, so
a recipe's spread over seeds includes split noise and the recipes are compared on equal footing. Our fit runs
through the real `training.fit` command (export included: its accuracy is the ONNX bundle's, as served). TRL's
`RewardTrainer` runs with its defaults but for the ones named here; it drops pairs longer than its `max_length`
(its own filter), and its model is scored on every held-out pair, a text over that length cut from the left.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.config import FitConfig

# The default recipe's length: a row names its length only where it differs.
FIT_MAX_LENGTH: int = FitConfig.max_length
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "preferences"
KEYS = ("chosen", "rejected")
SHARED_FILES = ("finegrained_qa_dev.jsonl.gz", "hh_rlhf_harmless_base_test.jsonl.gz", "pandalm_test.jsonl")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=[str(SHARED / f) for f in SHARED_FILES], help="Preference files.")
    p.add_argument("--base", help="Backbone folder or hub name for both (default: the fit's, all-MiniLM-L6-v2).")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="One prompt split and run per seed.")
    p.add_argument("--truncation", nargs="+", default=["left"], help="Our fit once per policy (left, head-tail).")
    p.add_argument("--max-length", type=int, default=FIT_MAX_LENGTH, help="Our fit's tokens per pair.")
    p.add_argument(
        "--variant",
        nargs="+",
        default=["default"],
        help="Our fit once per variant, NAME=FIT-ARGS (e.g. 'cls=--pooling cls', 'full=--freeze-layers 0'); "
        "'default' is the plain recipe; '--drop-over N' drops training pairs longer than N tokens as TRL does.",
    )
    p.add_argument("--epochs", type=float, help="Our fit's epochs (default: the fit's default recipe).")
    p.add_argument("--train-sample", type=int, default=0, help="Train on this many pairs of the split (0: all).")
    p.add_argument("--eval-fraction", type=float, default=0.2, help="Share of prompts held out.")
    p.add_argument("--no-trl", action="store_true", help="Skip TRL's RewardTrainer.")
    p.add_argument("--trl-epochs", type=float, default=1.0)
    p.add_argument("--trl-batch-size", type=int, default=8)
    p.add_argument("--trl-max-length", type=int, default=512, help="TRL's max_length (it drops longer pairs).")
    p.add_argument("--threads", type=int, help="torch threads for both.")
    p.add_argument("--work", help="Folder for split files, bundles and checkpoints (default: a temporary one).")
    p.add_argument("--out", default="bench-training", help="Prefix for OUT.json and OUT.md.")
    p.add_argument("--docs", help="Append the markdown section to this file (e.g. docs/training.md).")
    p.add_argument("--label", default="", help="A line said above the table (what was reduced, the machine).")
    p.add_argument("--quick", action="store_true", help="Smoke run: 48 pairs, 1 epoch each, 64 tokens, 1 seed.")
    p.add_argument(
        "--summarise", nargs="+", metavar="JSON", help="Train nothing: tabulate the runs of earlier OUT.json."
    )
    args = p.parse_args(argv)
    args.variants = dict(_variant(v) for v in args.variant)
    if args.quick:
        args.epochs, args.trl_epochs, args.max_length, args.trl_max_length = 1.0, 1.0, 64, 64
        args.seeds, args.train_sample = args.seeds[:1], args.train_sample or 48
    return args


def _variant(text: str) -> tuple[str, list[str]]:
    name, _, fit_args = text.partition("=")
    if name != "default" and not fit_args:
        raise SystemExit(f"--variant {text!r}: expected NAME=FIT-ARGS")
    words = shlex.split(fit_args)
    if "--drop-over" in words:
        limit = words[words.index("--drop-over") + 1 :][:1]
        if not (limit and limit[0].isdigit()):
            raise SystemExit(f"--variant {text!r}: --drop-over takes a token count")
    return name, words


def recipe_name(policy: str, max_length: int, variant: str) -> str:
    """Our fit's row name: the policy, then what differs from the default recipe (its length, no variant)."""
    extras = [f"{max_length} tokens"] * (max_length != FIT_MAX_LENGTH) + [variant] * (variant != "default")
    return f"ours ({', '.join([policy, *extras])})"


def drop_over(train: Path, limit: int, base: str | None, folder: Path) -> Path:
    """TRL's own data filter, applied to our fit's training file: keep a pair only if prompt + completion + EOS of
    both sides is at most `limit` tokens (RewardTrainer drops the rest)."""
    import transformers as tf

    from training.data import load_pairs
    from training.model import default_base

    tokenizer = tf.AutoTokenizer.from_pretrained(base or default_base())
    eos = tokenizer.eos_token or tokenizer.sep_token
    pairs = load_pairs([train])

    def fits(p: Any) -> bool:
        texts = [_plain(p.prompt) + _plain(getattr(p, k)) + eos for k in KEYS]
        return all(len(ids) <= limit for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])

    folder.mkdir(parents=True, exist_ok=True)
    return _write(folder / f"train-under-{limit}.jsonl", [p for p in pairs if fits(p)])


def split_seed(args: argparse.Namespace, seed: int, work: Path) -> tuple[Path, dict[str, Path], int]:
    """The seed's prompt split written as files (training pairs, held-out pairs per source file): both recipes
    read exactly these."""
    from training.data import load_pairs, sample_pairs, split_by_prompt

    pairs = load_pairs(args.data, skip_invalid=True)
    train, held = split_by_prompt(pairs, args.eval_fraction, seed)
    if args.train_sample:
        train = sample_pairs(train, args.train_sample, seed)
    folder = work / f"seed{seed}"
    (folder / "held").mkdir(parents=True, exist_ok=True)
    train_file = _write(folder / "train.jsonl", train)
    by_file: dict[str, list[Any]] = {}
    for pair in held:
        by_file.setdefault(Path(pair.source.rsplit(":", 1)[0]).name.split(".")[0], []).append(pair)
    held_files = {name: _write(folder / "held" / f"{name}.jsonl", ps) for name, ps in sorted(by_file.items())}
    return train_file, held_files, len(train)


def _write(path: Path, pairs: Sequence[Any]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for p in pairs:
            record = {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            f.write(json.dumps(record | ({"margin": p.margin} if p.margin is not None else {})) + "\n")
    return path


def run_ours(
    args: argparse.Namespace, seed: int, policy: str, variant: str, train: Path, held: dict[str, Path], folder: Path
) -> dict[str, Any]:
    """`training.fit` on the seed's files: its bundle's per-file held-out accuracy (fp32 ONNX) and its times."""
    from models.bundle import read_bundle
    from training.fit import main

    extra = list(args.variants[variant])
    if "--drop-over" in extra:
        at = extra.index("--drop-over")
        train = drop_over(train, int(extra[at + 1]), args.base, folder)
        del extra[at : at + 2]
    argv = ["--data", str(train), "--eval-data", *map(str, held.values()), "--out", str(folder / "bundle")]
    argv += ["--seed", str(seed), "--max-length", str(args.max_length), "--truncation", policy]
    argv += ["--no-int8", "--no-fp16", "--no-plot", "--bf16", "off", "--save-steps", "100000"]
    argv += ["--epochs", str(args.epochs)] if args.epochs else []
    argv += ["--base", args.base] if args.base else []
    argv += ["--threads", str(args.threads)] if args.threads else []
    argv += extra
    started = time.perf_counter()
    if main(argv) != 0:
        raise RuntimeError(f"training.fit {' '.join(argv)} failed")
    total = time.perf_counter() - started
    meta = read_bundle(folder / "bundle").meta
    summary = meta.training["summary"]
    files = meta.eval_metrics["fp32"]["files"]
    return {
        "recipe": recipe_name(policy, args.max_length, variant),
        "seed": seed,
        "pairs_used": sum(1 for _ in train.open()),
        "pairs_truncated": summary["truncated_train_pairs"],
        "train_seconds": summary["train_seconds"],
        "total_seconds": round(total, 1),
        "accuracy": {Path(name).stem: m["accuracy"] for name, m in files.items()},
        "n": {Path(name).stem: m["n"] for name, m in files.items()},
    }


def run_trl(args: argparse.Namespace, seed: int, train: Path, held: dict[str, Path], folder: Path) -> dict[str, Any]:
    """TRL's RewardTrainer on the same training pairs (plain text: prompt + completion + EOS, as TRL builds it)."""
    import numpy as np
    import torch
    import transformers as tf
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from training.data import load_pairs
    from training.evaluate import pair_metrics
    from training.model import default_base

    base = args.base or default_base()
    tokenizer = tf.AutoTokenizer.from_pretrained(base)
    # Encoders have no EOS: TRL appends the one it is told, the separator here.
    eos = tokenizer.eos_token or tokenizer.sep_token
    pairs = load_pairs([train])
    rows = {k: [_plain(getattr(p, k)) for p in pairs] for k in ("prompt", "chosen", "rejected")}
    config = RewardConfig(
        output_dir=str(folder / "trl"),
        num_train_epochs=args.trl_epochs,
        per_device_train_batch_size=args.trl_batch_size,
        max_length=args.trl_max_length,
        seed=seed,
        eos_token=None if tokenizer.eos_token else eos,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=50,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    model = tf.AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    trainer = RewardTrainer(model=model, args=config, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model = trained(trainer.model).eval()
    tokenizer.truncation_side = "left"  # a held-out text over max_length keeps its completion
    accuracy, n = {}, {}
    for name, path in held.items():
        held_pairs = load_pairs([path])
        prompts = [_plain(p.prompt) for p in held_pairs]
        texts = {k: [p + _plain(getattr(q, k)) + eos for p, q in zip(prompts, held_pairs, strict=True)] for k in KEYS}
        chosen, rejected = (np.array(_score(model, tokenizer, texts[k], args)) for k in KEYS)
        accuracy[name] = pair_metrics(held_pairs, chosen, rejected)["accuracy"]
        n[name] = len(held_pairs)
    return {
        "recipe": "TRL RewardTrainer",
        "seed": seed,
        "pairs_used": len(trainer.train_dataset),  # type: ignore[arg-type]  # a Dataset: TRL filtered it
        "pairs_truncated": 0,
        "train_seconds": round(seconds, 1),
        "total_seconds": round(seconds, 1),
        "accuracy": accuracy,
        "n": n,
    }


def trained(model: Any) -> Any:
    """The trainer's model (typed as optional by transformers; set once train() has run)."""
    assert model is not None
    return model


def _plain(text: Any) -> str:
    """A text as TRL's plain-text path reads it (message lists as their hh-rlhf transcript)."""
    from models.messages import prompt_text

    return text if isinstance(text, str) else prompt_text(text)


def _score(model: Any, tokenizer: Any, texts: list[str], args: argparse.Namespace) -> list[float]:
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    scores = [0.0] * len(texts)
    with torch.no_grad():
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            batch = tokenizer(
                [texts[i] for i in idx],
                truncation=True,
                max_length=args.trl_max_length,
                padding=True,
                return_tensors="pt",
            )
            for i, value in zip(idx, model(**batch).logits[:, 0].tolist(), strict=True):
                scores[i] = value
    return scores


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe: mean pairs and time, and per file (and pooled over files) accuracy mean and spread over seeds."""
    rows = []
    by_recipe = {name: [r for r in runs if r["recipe"] == name] for name in dict.fromkeys(r["recipe"] for r in runs)}
    first = next(iter(by_recipe.values()), [])
    base = {r["seed"]: r for r in first}
    for recipe, mine in by_recipe.items():
        per_file, files = _per_file(mine), sorted(mine[0]["accuracy"])
        # A seed is a split: a recipe's gain over the first row seed by seed leaves out how hard each split is,
        # which dominates both rows' spreads.
        paired = [r for r in mine if r["seed"] in base]
        gains = {
            f: [a - b for a, b in zip(v, _per_file([base[r["seed"]] for r in paired])[f], strict=True)]
            for f, v in _per_file(paired).items()
        }
        rows.append(
            {
                "recipe": recipe,
                "seeds": [r["seed"] for r in mine],
                "pairs_used": statistics.mean(r["pairs_used"] for r in mine),
                "pairs_truncated": statistics.mean(r["pairs_truncated"] for r in mine),
                "train_seconds": statistics.mean(r["train_seconds"] for r in mine),
                "accuracy": {f: _mean_spread(v) for f, v in per_file.items()},
                "gain_over_first": {f: _mean_spread(v) for f, v in gains.items() if v} if mine is not first else {},
                "paired_seeds": len(paired),
                "n": {f: round(statistics.mean(r["n"][f] for r in mine)) for f in files},  # splits differ by seed
            }
        )
    return rows


def _per_file(runs: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Accuracy per file and pooled over files (weighted by pairs), one value per run."""
    files = sorted(runs[0]["accuracy"]) if runs else []
    pooled = [sum(r["accuracy"][f] * r["n"][f] for f in files) / sum(r["n"][f] for f in files) for r in runs]
    return {f: [r["accuracy"][f] for r in runs] for f in files} | {"pooled": pooled}


def _mean_spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, and the sample standard deviation over seeds (0 for one seed)."""
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def train_all(args: argparse.Namespace, command: str) -> list[dict[str, Any]]:
    """Every recipe on every seed's split; OUT.json is rewritten after each run, so a long run that is stopped
    keeps what it measured (`--summarise` tabulates it)."""
    runs: list[dict[str, Any]] = []

    def record(run: dict[str, Any]) -> None:
        runs.append(run)
        print(json.dumps(run), flush=True)
        Path(f"{args.out}.json").write_text(json.dumps({"command": command, "runs": runs}, indent=2))

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(args.work or tmp)
        for seed in args.seeds:
            train, held, n_train = split_seed(args, seed, work)
            print(f"seed {seed}: {n_train} training pairs, held out {list(held)}", flush=True)
            for policy in args.truncation:
                for variant in args.variants:
                    folder = work / f"seed{seed}" / f"{policy}-{args.max_length}-{variant}"
                    record(run_ours(args, seed, policy, variant, train, held, folder))
            if not args.no_trl:
                record(run_trl(args, seed, train, held, work / f"seed{seed}"))
    return runs


def markdown(rows: Sequence[dict[str, Any]], command: str, label: str) -> str:
    files = [f for f in rows[0]["accuracy"] if f != "pooled"] + ["pooled"]
    n = rows[0]["n"]
    heads = [f"{f} (n≈{n[f]})" if f in n else "pooled" for f in files]
    lines = [
        "### Our fit and TRL's RewardTrainer, side by side (`python -m bench.training`)",
        "",
        *([label, ""] if label else []),
        f"`{command}`",
        "",
        "Held-out accuracy per file, % (mean ± sample standard deviation over the seeds; each seed its own prompt "
        "split, shared by every recipe).",
        "",
        "| recipe | seeds | pairs used (cut) | training time | " + " | ".join(heads) + " |",
        "|---|---|---|---|" + "---|" * len(files),
    ]
    for r in rows:
        acc = [f"{100 * r['accuracy'][f]['mean']:.1f} ± {100 * r['accuracy'][f]['sd']:.1f}" for f in files]
        minutes, seconds = divmod(round(r["train_seconds"]), 60)
        used = f"{r['pairs_used']:,.0f} ({r['pairs_truncated']:,.0f})"
        seeds = ",".join(map(str, r["seeds"]))
        lines.append(f"| {r['recipe']} | {seeds} | {used} | {minutes}:{seconds:02d} | " + " | ".join(acc) + " |")
    gains = [r for r in rows if r.get("gain_over_first")]
    if gains:
        lines += [
            "",
            f"Gain over `{rows[0]['recipe']}`, paired by seed (same split), points (mean ± sd of the per-seed gains):",
            "",
            "| recipe | paired seeds | " + " | ".join(heads) + " |",
            "|---|---|" + "---|" * len(files),
        ]
        for r in gains:
            g = r["gain_over_first"]
            cells = [f"{100 * g[f]['mean']:+.1f} ± {100 * g[f]['sd']:.1f}" for f in files]
            lines.append(f"| {r['recipe']} | {r['paired_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    command = "python -m bench.training " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    print(command, flush=True)
    if args.summarise:
        runs = [r for path in args.summarise for r in json.loads(Path(path).read_text())["runs"]]
    else:
        runs = train_all(args, command)
    rows = summarise(runs)
    text = markdown(rows, command, args.label)
    Path(f"{args.out}.json").write_text(json.dumps({"command": command, "runs": runs, "rows": rows}, indent=2))
    Path(f"{args.out}.md").write_text(text)
    if args.docs:
        with open(args.docs, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
