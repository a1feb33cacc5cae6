"""python -m training.fit: parse -> load data -> backbone -> Bradley–Terry training -> export, evaluate -> bundle."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from .config import FitConfig, parse_config
from .data import DataError, LoadReport, PreferencePair, fingerprint, load_pairs, split_by_prompt

log = logging.getLogger("training.fit")


def load_splits(cfg: FitConfig) -> tuple[list[PreferencePair], dict[str, list[PreferencePair]]]:
    """Training pairs, and held-out pairs per source file (split by prompt unless --eval-data is given)."""
    report = LoadReport()
    pairs = load_pairs(cfg.data, skip_invalid=cfg.skip_invalid, report=report)
    if report.skipped:
        log.warning("skipped %d invalid records: %s", sum(report.skipped.values()), dict(report.skipped))
    if cfg.eval_data:
        train = pairs
        held = load_pairs(cfg.eval_data, skip_invalid=cfg.skip_invalid)
    else:
        train, held = split_by_prompt(pairs, cfg.eval_fraction, cfg.seed)
    if not train:
        raise DataError("no training pairs left after the split")
    by_file: dict[str, list[PreferencePair]] = {}
    for pair in held:
        by_file.setdefault(pair.source.rsplit(":", 1)[0], []).append(pair)
    return train, by_file


def bf16_enabled(setting: str) -> bool:
    import torch

    if setting != "auto":
        return setting == "on"
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    # Only where oneDNN has native bf16 kernels: emulated bf16 ran 8x slower than fp32 on an AVX2 CPU here.
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def train(cfg: FitConfig, train_pairs: Sequence[PreferencePair]) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Fine-tune the backbone; returns (reward model, hf tokenizer, format spec, training summary)."""
    from tokenizers import Tokenizer
    from transformers import TrainingArguments, set_seed

    from models.formatting import Formatter

    from .model import (
        RewardModel,
        choose_pooling,
        default_base,
        disable_dropout,
        format_spec,
        freeze_lower,
        layers_to_freeze,
        load_backbone,
        model_max_length,
    )
    from .trainer import PairCollator, PairDataset, RewardTrainer

    set_seed(cfg.seed)
    base = cfg.base or default_base()
    model, tokenizer, architecture = load_backbone(base)
    if not cfg.dropout:
        disable_dropout(model)
    frozen_layers = layers_to_freeze(model, cfg.freeze_layers)
    if frozen_layers or cfg.freeze_embeddings:
        trainable = freeze_lower(model, frozen_layers, cfg.freeze_embeddings)
        log.info("embeddings and %d lowest layers frozen: %d parameters train", frozen_layers, trainable)
    spec = format_spec(tokenizer, architecture, model_max_length(model, cfg.max_length))
    formatter = Formatter(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()), spec)
    dataset = PairDataset(train_pairs, formatter)
    log.info(
        "%d training pairs (%d distinct texts), %d truncated to %d tokens",
        len(dataset),
        dataset.distinct_texts,
        dataset.truncated,
        spec.max_length,
    )
    bf16 = bf16_enabled(cfg.bf16)
    args = TrainingArguments(
        output_dir=str(cfg.work_dir / "checkpoints"),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type="linear",
        weight_decay=cfg.weight_decay,
        bf16=bf16,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=2,
        seed=cfg.seed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )
    pooling = choose_pooling(model, architecture, base, cfg.pooling)
    log.info("%s backbone %s, pooling %s", architecture, base, pooling)
    reward_model = RewardModel(model, architecture, pooling)
    trainer = RewardTrainer(
        model=reward_model,
        args=args,
        train_dataset=dataset,
        data_collator=PairCollator(tokenizer.pad_token_id),
        center_rewards_coefficient=cfg.center_rewards_coefficient,
    )
    resume = _last_checkpoint(str(args.output_dir)) if cfg.resume else None
    if cfg.resume and resume is None:
        log.warning("--resume: no checkpoint in %s, starting from scratch", args.output_dir)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    reward_model.eval()
    reward_model.float()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "base_model": base if cfg.base else "sentence-transformers/all-MiniLM-L6-v2",
        "architecture": architecture,
        "pooling": pooling,
        "frozen_layers": frozen_layers,
        "steps": trainer.state.global_step,
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_loss": round(float(result.training_loss), 4),
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "bf16": bf16,
        "resumed_from": resume,
        "truncated_train_pairs": dataset.truncated,
    }
    return reward_model, tokenizer, spec, summary


def _last_checkpoint(folder: str) -> str | None:
    """The newest *complete* checkpoint: a fit killed while saving leaves a folder without its trainer state.

    The Trainer writes trainer_state.json last, so a checkpoint whose state file parses is whole; newer,
    incomplete ones are skipped with a warning (transformers' get_last_checkpoint would pick them and fail).
    """
    if not os.path.isdir(folder):
        return None
    found = []
    for name in os.listdir(folder):
        prefix, _, step = name.partition("-")
        if prefix == "checkpoint" and step.isdigit() and os.path.isdir(os.path.join(folder, name)):
            found.append((int(step), os.path.join(folder, name)))
    for _, path in sorted(found, reverse=True):
        try:
            with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
                json.load(f)
            return path
        except (OSError, ValueError):
            log.warning("--resume: skipping incomplete checkpoint %s (interrupted while saving)", path)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = parse_config(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    try:
        train_pairs, held_out = load_splits(cfg)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info(
        "%d training pairs, %d held-out pairs in %d files",
        len(train_pairs),
        sum(map(len, held_out.values())),
        len(held_out),
    )
    reward_model, tokenizer, spec, summary = train(cfg, train_pairs)

    from .export import ExportError, export_bundle

    summary["data_fingerprint"] = fingerprint(train_pairs)
    try:
        bundle = export_bundle(cfg, reward_model, tokenizer, spec, train_pairs, held_out, summary)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    print(
        json.dumps(
            {
                "bundle": str(bundle.path),
                "model_id": bundle.meta.model_id,
                "eval": bundle.meta.eval_metrics,
                "parity": bundle.meta.parity,
                "training": summary,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
