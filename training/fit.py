"""python -m training.fit: parse -> load data -> backbone -> Bradley–Terry training -> export, evaluate -> bundle."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .config import ExportOptions, FitConfig, parse_config
from .data import DataError, LoadReport, PreferencePair, fingerprint, load_objectives, sample_pairs, split_by_prompt

log = logging.getLogger("training.fit")
AGREEMENT_PAIRS = 512  # at least this many pairs decide int8 vs fp32 agreement


@dataclass
class TrainResult:
    """What training hands the export: the model and how its text becomes tokens, and what happened (recorded in the
    bundle's `training.summary`)."""

    model: Any = field(repr=False)  # training.model.RewardModel
    tokenizer: Any = field(repr=False)
    spec: Any  # models.formatting.FormatSpec
    base_model: str
    architecture: str
    pooling: str
    frozen_layers: int
    steps: int
    train_seconds: float
    train_loss: float
    first_logged_loss: float | None
    last_logged_loss: float | None
    bf16: dict[str, Any]
    resumed_from: str | None
    truncated_train_pairs: int
    main_process: bool
    objectives: list[str]
    length_head: float
    length_coefficient: float | None = None  # what the unserved length head learned: reward per log-length
    data_parallel: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The fields that describe the run, as the bundle records them (the optional ones only when present)."""
        described = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "tokenizer", "spec")
        }
        return {k: v for k, v in described.items() if v is not None or k not in ("length_coefficient", "data_parallel")}


def load_splits(cfg: FitConfig) -> tuple[list[PreferencePair], dict[str, list[PreferencePair]]]:
    """Training pairs, and held-out pairs per source file (split by prompt unless --eval-data is given)."""
    report = LoadReport()
    pairs, _ = load_objectives(cfg.data, skip_invalid=cfg.skip_invalid, report=report)
    if report.skipped:
        log.warning("skipped %d invalid records: %s", sum(report.skipped.values()), dict(report.skipped))
    if cfg.eval_data:
        train = pairs
        held, _ = load_objectives(cfg.eval_data, skip_invalid=cfg.skip_invalid)
    else:
        train, held = split_by_prompt(pairs, cfg.eval_fraction, cfg.seed)
    if not train:
        raise DataError("no training pairs left after the split")
    by_file: dict[str, list[PreferencePair]] = {}
    for pair in held:
        by_file.setdefault(pair.source.rsplit(":", 1)[0], []).append(pair)
    return train, by_file


def train(cfg: FitConfig, train_pairs: Sequence[PreferencePair]) -> TrainResult:
    """Fine-tune the backbone: the trained reward model, its tokenizer and format, and what happened.

    Under torchrun / accelerate launch every rank runs this; the summary says whether this is the main process
    (the only one that exports) and how the ranks shared the pairs.
    """
    import torch
    from accelerate import PartialState
    from transformers import TrainingArguments, set_seed

    from models.formatting import Formatter

    from .model import (
        DEFAULT_BASE_NAME,
        RewardModel,
        choose_pooling,
        default_base,
        disable_dropout,
        freeze_lower,
        layers_to_freeze,
        load_backbone,
        model_max_length,
    )
    from .precision import decide_bf16
    from .tokens import backend, format_spec
    from .trainer import PairCollator, PairDataset, RewardTrainer, data_parallel_report

    set_seed(cfg.seed)
    on_gpu = torch.cuda.is_available()
    objectives = objectives_of(train_pairs)
    state = PartialState(cpu=not on_gpu)  # under a launcher: joins the process group now, for _rank0s below
    base = cfg.base or default_base()
    heads = len(objectives) or 1
    model, tokenizer, architecture = load_backbone(base, heads=heads)
    if not cfg.dropout:
        disable_dropout(model)
    frozen_layers = layers_to_freeze(model, cfg.freeze_layers)
    if frozen_layers or cfg.freeze_embeddings:
        trainable = freeze_lower(model, frozen_layers, cfg.freeze_embeddings)
        log.info("embeddings and %d lowest layers frozen: %d parameters train", frozen_layers, trainable)
    spec = format_spec(tokenizer, architecture, model_max_length(model, cfg.max_length), truncation=cfg.truncation)
    formatter = Formatter(backend(tokenizer), spec)
    dataset = PairDataset(train_pairs, formatter, objectives)
    log.info(
        "%d training pairs (%d distinct texts), %d truncated to %d tokens",
        len(dataset),
        dataset.distinct_texts,
        dataset.truncated,
        spec.max_length,
    )
    pooling = choose_pooling(model, architecture, base, cfg.pooling)
    log.info("%s backbone %s, pooling %s", architecture, base, pooling)
    reward_model = RewardModel(model, architecture, pooling, heads=heads, length_head=bool(cfg.length_head))
    collator = PairCollator(tokenizer.pad_token_id)
    probe = None if on_gpu or not state.is_main_process else _probe_step(reward_model, dataset, collator, cfg)
    bf16 = _rank0s(decide_bf16(cfg.bf16, probe, cuda=on_gpu), state)
    log.info("bf16 %s: %s", "on" if bf16.enabled else "off", bf16.reason)
    args = TrainingArguments(
        output_dir=str(cfg.work_dir / "checkpoints"),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type="linear",
        weight_decay=cfg.weight_decay,
        bf16=bf16.enabled,
        use_cpu=not on_gpu,  # transformers refuses bf16 on a CPU unless told it is one
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=2,
        seed=cfg.seed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        ddp_find_unused_parameters=False,  # every trainable weight takes part in each step
    )
    trainer = RewardTrainer(
        model=reward_model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        center_rewards_coefficient=cfg.center_rewards_coefficient,
        length_weight=cfg.length_head,
    )
    resume = _last_checkpoint(str(args.output_dir)) if cfg.resume else None
    if cfg.resume and resume is None:
        log.warning("--resume: no checkpoint in %s, starting from scratch", args.output_dir)
    first_whole_epoch = 0 if resume is None else _epochs_done(resume)  # read now: the Trainer rotates checkpoints
    started = time.perf_counter()
    outcome = trainer.train(resume_from_checkpoint=resume)
    reward_model.eval()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = TrainResult(
        model=reward_model,
        tokenizer=tokenizer,
        spec=spec,
        base_model=base if cfg.base else DEFAULT_BASE_NAME,
        architecture=architecture,
        pooling=pooling,
        frozen_layers=frozen_layers,
        steps=trainer.state.global_step,
        train_seconds=round(time.perf_counter() - started, 1),
        train_loss=round(float(outcome.training_loss), 4),
        first_logged_loss=losses[0] if losses else None,
        last_logged_loss=losses[-1] if losses else None,
        bf16=bf16.to_dict(),
        resumed_from=resume,
        truncated_train_pairs=dataset.truncated,
        main_process=state.is_main_process,
        objectives=objectives,
        length_head=cfg.length_head,
    )
    if reward_model.length_coef is not None:  # what the unserved length head learned: reward per log-length
        result.length_coefficient = round(reward_model.length_coef.item(), 4)
    if trainer.batches is not None:
        whole = list(range(first_whole_epoch, int(trainer.state.epoch + 1e-9)))  # run here from their start
        result.data_parallel = data_parallel_report(trainer.batches, len(dataset), whole)
    return result


def objectives_of(pairs: Sequence[PreferencePair]) -> list[str]:
    """The objectives the pairs name, in order of first appearance ([] when none: one reward)."""
    names = list(dict.fromkeys(p.objective for p in pairs if p.objective))
    return names


def _probe_step(model: Any, dataset: Any, collator: Any, cfg: FitConfig) -> Any:
    """The bf16 probe's step: forward + backward of the real model on representative real batches."""
    from .precision import training_step_probe
    from .trainer import representative_batches

    batches = [collator([dataset[i] for i in b]) for b in representative_batches(dataset, cfg.batch_size, cfg.seed)]
    steps = [training_step_probe(model, batch) for batch in batches]

    def step() -> None:
        for one in steps:
            one()

    model.train()
    return step


def _rank0s(decision: Any, state: Any) -> Any:
    """Rank 0's decision on every rank: ranks timing their own probes could disagree, and DDP needs one precision."""
    if state.num_processes == 1:
        return decision
    import torch.distributed as dist

    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _epochs_done(checkpoint: str) -> int:
    """Epochs a checkpoint had begun: the resumed run's first whole epoch is the next one."""
    import math

    with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as f:
        return math.ceil(float(json.load(f).get("epoch", 0.0)) - 1e-9)


def export_job(
    cfg: FitConfig,
    options: ExportOptions,
    trained: TrainResult,
    train_pairs: Sequence[PreferencePair],
    held_out: dict[str, list[PreferencePair]],
    data_fingerprint: str,
) -> Any:
    """What the fit hands the export: the trained weights (saved first, so a failed check never costs the training
    run: --resume re-exports from them) read back as an fp32 copy, and its pairs. Calibration comes from training
    pairs; parity, evaluation and the int8 agreement from held-out pairs, topped up with training pairs when they
    are few, so one flipped pair in 49 cannot decide the export."""
    from pathlib import Path

    from .export import ExportJob

    model = trained.model
    model.save_backbone(cfg.work_dir / "hf", trained.tokenizer)
    eval_pairs = [p for pairs in held_out.values() for p in pairs]
    extra = max(0, AGREEMENT_PAIRS - len(eval_pairs)) if eval_pairs else 0
    summary = trained.summary() | {"data_fingerprint": data_fingerprint}
    return ExportJob(
        model=model.fp32_copy(cfg.work_dir / "hf"),
        tokenizer=trained.tokenizer,
        spec=trained.spec,
        out=Path(cfg.out),
        work=cfg.work_dir / "export",
        name=Path(cfg.out).name,
        base_model=trained.base_model,
        calibration=sample_pairs(train_pairs, cfg.calibration_pairs, cfg.seed),
        parity=sample_pairs(eval_pairs or list(train_pairs), cfg.parity_pairs, cfg.seed),
        eval_files=held_out or {"train (no held-out pairs)": list(train_pairs)},
        agreement_extra=sample_pairs(train_pairs, extra, cfg.seed + 1),
        split="eval_data" if cfg.eval_data else "prompt_split",
        data_fingerprint=data_fingerprint,
        reward_head=model.describe() | {"source": "training.fit"},
        objectives=trained.objectives,
        weights=parse_weights(cfg.objective_weights, trained.objectives),
        provenance={k: v for k, v in vars(cfg).items() if k not in ("data", "eval_data")}
        | vars(options)
        | {"data": list(cfg.data), "eval_data": cfg.eval_data, "summary": summary},
        options=options,
        int8=cfg.int8,
        fp16=cfg.fp16,
        plot=cfg.work_dir / "eval.png" if cfg.plot else None,
    )


def parse_weights(text: str | None, objectives: Sequence[str]) -> dict[str, float]:
    """`--objective-weights helpful=0.7,harmless=0.3` as a dict; {} (equal weights) when not given."""
    if not text:
        return {}
    weights = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--objective-weights {item!r}: write name=number") from None
    unknown = set(weights) - set(objectives)
    if unknown:
        raise ValueError(f"--objective-weights: unknown objective(s) {', '.join(sorted(unknown))}")
    return weights


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
    cfg, options = parse_config(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    try:
        train_pairs, held_out = load_splits(cfg)
        parse_weights(cfg.objective_weights, objectives_of(train_pairs))
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info(
        "%d training pairs, %d held-out pairs in %d files",
        len(train_pairs),
        sum(map(len, held_out.values())),
        len(held_out),
    )
    try:
        trained = train(cfg, train_pairs)
    except (ValueError, OSError) as e:  # a backbone or setting that cannot work: one line, not a library's trace
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if not trained.main_process:
        log.info("training done on this rank; the main process evaluates and exports")
        return 0

    from .export import ExportError, export_bundle

    data_fingerprint = fingerprint(train_pairs)
    try:
        bundle = export_bundle(export_job(cfg, options, trained, train_pairs, held_out, data_fingerprint))
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    summary = trained.summary() | {"total_seconds": round(time.perf_counter() - started, 1)}
    print(
        json.dumps(
            {
                "bundle": str(bundle.path),
                "model_id": bundle.meta.model_id,
                "eval": bundle.meta.eval_metrics,
                "parity": bundle.meta.parity.to_dict(),
                "training": summary,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
