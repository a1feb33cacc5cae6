"""An existing Hugging Face reward model (`*ForSequenceClassification`, local or from the hub) made ready for the
export, and `python -m training.export` (run through training/export.py): the checks that it can be served
faithfully, and how its text becomes tokens, decided the way its documented usage scores it.

- Encoders (BERT, RoBERTa, DeBERTa: OpenAssistant's reward models) score a text pair `tokenizer(question,
  answer)`: formatting `pair`, the reward is the head's logit.
- Decoders (Llama, Qwen, Mistral, Gemma, GPT-2: Skywork-Reward, GRM, TRL-trained models) score the conversation
  through the tokenizer's own chat template, tokenised as `apply_chat_template(..., tokenize=True)` does (the
  template writes its own BOS; nothing is appended): formatting `chat`. Without a template: `plain`, prompt +
  completion with the tokenizer's specials (`--append-eos` for models trained with TRL on plain text, which
  appends EOS).
- The reward is read where transformers reads it: a decoder with a pad id in its config at the rightmost token
  that is not the pad id (so with pad id == EOS id, a text ending in EOS is read at the token *before* its EOS,
  exactly as transformers does), by exporting the model's own forward; without a pad id transformers reads the
  last token of a single text, and so do we, found from the attention mask.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.formatting import FormatSpec

from .model import RewardModel, architecture_of, model_max_length

log = logging.getLogger("training.imported")
FORMATTINGS = ("auto", "pair", "chat", "plain")
DEFAULT_MAX_LENGTH = 4096  # decoders' position tables run to 32k+; a reward rarely needs more than this


class ImportRefused(ValueError):
    """A checkpoint this project cannot serve faithfully; the message says why and what to pass instead."""


@dataclass(frozen=True)
class Imported:
    model: RewardModel
    tokenizer: Any
    spec: FormatSpec
    reward_head: dict[str, Any]  # BundleMeta.reward_head: family, pooling, where the reward is read, label
    pad_id: int  # what batches are padded with (the config's pad id where the head reads by it)
    objectives: list[str]  # a multi-label model's labels as objectives ([] for one reward)


def load_reward_model(
    source: str,
    formatting: str = "auto",
    max_length: int | None = None,
    label_index: int | None = None,
    append_eos: bool = False,
    trust_remote_code: bool = False,
) -> Imported:
    """Load `source` (folder or hub id) in fp32, check it, and decide its formatting; ImportRefused if it cannot be
    served as transformers scores it."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    if formatting not in FORMATTINGS:
        raise ImportRefused(f"--formatting {formatting!r}: choose from {', '.join(FORMATTINGS)}")
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    heads = [a for a in (getattr(config, "architectures", None) or []) if not a.endswith("ForSequenceClassification")]
    if heads:
        raise ImportRefused(
            f"{source}: {heads[0]} is a custom reward head; only plain *ForSequenceClassification models are served "
            "exactly as transformers scores them (convert it to one first)"
        )
    labels = int(getattr(config, "num_labels", 1))
    # Several labels are several objectives (one reward each, e.g. ArmoRM-style helpfulness / safety heads), unless
    # --label-index picks one of them as the reward.
    id2label = getattr(config, "id2label", None) or {}
    objectives = (
        [_name(id2label.get(i, f"LABEL_{i}")) for i in range(labels)] if labels > 1 and label_index is None else []
    )
    if len(set(objectives)) != len(objectives):
        objectives = [f"label_{i}" for i in range(labels)]
    index = label_index or 0
    if not 0 <= index < labels:
        raise ImportRefused(f"--label-index {index}: the model has {labels} labels")
    architecture = architecture_of(config)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise ImportRefused(f"{source}: needs a fast tokenizer (tokenizer.json), which the service loads")
    model = AutoModelForSequenceClassification.from_pretrained(
        source, dtype=torch.float32, trust_remote_code=trust_remote_code
    ).eval()
    pad_id = model.config.pad_token_id
    if architecture == "decoder":
        pooling = "head" if pad_id is not None else "last"
        read = (
            f"the rightmost token that is not the pad id {pad_id} (transformers' rule"
            + (", which skips a trailing EOS: pad id == EOS id)" if pad_id == tokenizer.eos_token_id else ")")
            if pad_id is not None
            else "the last real token (attention mask), as transformers reads a single text without a pad id"
        )
    else:
        pooling, read = "cls", "the classification head over the first token's state (transformers' forward)"
    # With head pooling transformers finds the reward by the config's pad id, so batches are padded with it; with
    # the attention mask (encoders, "last") any id pads.
    fallback = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_for_batches = int(pad_id if pad_id is not None else (fallback or 0))
    spec = _spec(source, tokenizer, architecture, formatting, append_eos, model_max_length(model, max_length or 10**9))
    if max_length is None:
        spec = _with_length(spec, min(spec.max_length, DEFAULT_MAX_LENGTH))
    reward_model = RewardModel(model, architecture, pooling, index, heads=len(objectives) or 1).eval()
    label = str((getattr(config, "id2label", None) or {}).get(index, f"LABEL_{index}"))
    head = reward_model.describe() | {"read_at": read, "label": label, "source": source}
    log.info("%s: %s %s, formatting %s, reward read at %s", source, config.model_type, architecture, spec.kind, read)
    return Imported(reward_model, tokenizer, spec, head, pad_for_batches, objectives)


def _name(label: object) -> str:
    """A label as an objective name (letters, digits, _ and -)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", str(label)).strip("_") or "label"
    return name if re.match(r"[A-Za-z_]", name) else f"label_{name}"


def _with_length(spec: FormatSpec, max_length: int) -> FormatSpec:
    import dataclasses

    return dataclasses.replace(spec, max_length=max_length)


def _spec(source: str, tokenizer: Any, architecture: str, formatting: str, append_eos: bool, limit: int) -> FormatSpec:
    kind = formatting
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    if kind == "auto":
        kind = "pair" if architecture == "encoder" else ("chat" if template else "plain")
    if kind == "pair":
        return FormatSpec("pair", limit)
    eos = tokenizer.eos_token_id
    if eos is None and (append_eos or kind == "plain"):
        eos = tokenizer.pad_token_id
    if kind == "chat":
        if not template:
            raise ImportRefused(f"{source}: --formatting chat, but the tokenizer has no chat template")
        tokens = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
        return FormatSpec("chat", limit, eos, False, template, tokens, append_eos=append_eos)
    return FormatSpec("concat", limit, eos, add_special_tokens=True, append_eos=append_eos)


def main(argv: Sequence[str] | None = None) -> int:
    """python -m training.export: an existing Hugging Face reward model (folder or hub id) -> a checked bundle."""
    import argparse
    import sys

    from models.bundle import MODEL_FILES
    from models.reference import PROBES

    from . import graphs
    from .data import DataError, PreferencePair, load_pairs, sample_pairs
    from .export import ExportError, ExportJob, ExportOptions, export_bundle

    parser = argparse.ArgumentParser(prog="python -m training.export", description=main.__doc__)
    parser.add_argument("--model", required=True, help="Hugging Face folder or hub id of a *ForSequenceClassification.")
    parser.add_argument("--out", required=True, help="Bundle folder to write.")
    parser.add_argument(
        "--formatting",
        choices=FORMATTINGS,
        default="auto",
        help="How text becomes tokens: auto (encoders: text pair; decoders: their chat template, else "
        "plain), pair, chat or plain.",
    )
    parser.add_argument("--max-length", type=int, help="Tokens per text (default: the model's, at most 4096).")
    parser.add_argument(
        "--precisions",
        default="fp32,fp16",
        help="Graphs to ship, comma-separated: fp32 (always), int8 (CPU; needs --eval-data), fp16 (GPU).",
    )
    parser.add_argument(
        "--eval-data",
        nargs="+",
        help="Preference files: metrics, parity, int8 checks, and the reward "
        "statistics `normalize` uses (without them the bundle has none and refuses `normalize`).",
    )
    parser.add_argument(
        "--calibration-data",
        nargs="+",
        help="Preference files for int8 calibration and, without --eval-data, the reward statistics.",
    )
    parser.add_argument("--label-index", type=int, help="Which logit is the reward, for a model with several labels.")
    parser.add_argument(
        "--append-eos",
        action="store_true",
        help="Append EOS to decoder texts (models trained with TRL on plain, non-chat text).",
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="Let transformers run the model's own code.")
    parser.add_argument("--skip-invalid", action="store_true", help="Skip malformed records in the data files.")
    parser.add_argument("--parity-atol", type=float, default=1e-4, help="Max |ONNX fp32 − transformers|.")
    parser.add_argument("--min-int8-agreement", type=float, default=0.98)
    parser.add_argument("--fp16-tolerance", type=float, default=0.01, help="In units of the fp32 reward std.")
    parser.add_argument(
        "--external-data-bytes",
        type=int,
        default=graphs.EXTERNAL_DATA_BYTES,
        help="Graphs with more weight bytes keep their weights in one data file beside them.",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    precisions = {p.strip() for p in args.precisions.split(",") if p.strip()}
    if not precisions <= set(MODEL_FILES):
        print(f"error: --precisions: unknown {', '.join(sorted(precisions - set(MODEL_FILES)))}", file=sys.stderr)
        return 2
    try:
        imported = load_reward_model(
            args.model, args.formatting, args.max_length, args.label_index, args.append_eos, args.trust_remote_code
        )
        eval_files = {f: load_pairs([f], skip_invalid=args.skip_invalid) for f in args.eval_data or []}
        calibration = load_pairs(args.calibration_data, skip_invalid=args.skip_invalid) if args.calibration_data else []
    except (ImportRefused, DataError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    split = "eval_data" if eval_files else "calibration_data" if calibration else "none"
    if not eval_files and calibration:
        eval_files = {"calibration": calibration}
    pairs = [p for file_pairs in eval_files.values() for p in file_pairs]
    # Without data, parity is checked on the reference probes (texts of every kind, one past any max length).
    probes = [PreferencePair(p, c, PROBES[(i + 1) % len(PROBES)][1], source="probe") for i, (p, c) in enumerate(PROBES)]
    out = Path(args.out)
    job = ExportJob(
        model=imported.model,
        tokenizer=imported.tokenizer,
        spec=imported.spec,
        out=out,
        work=Path(f"{out}.work") / "export",
        name=out.name,
        base_model=args.model,
        calibration=sample_pairs(calibration or pairs, 128, args.seed),
        parity=sample_pairs(pairs, 64, args.seed) or probes,
        eval_files=eval_files,
        split=split,
        pad_id=imported.pad_id,
        reward_head=imported.reward_head,
        objectives=imported.objectives,
        provenance={"imported": dict(vars(args))},
        options=ExportOptions(
            int8="int8" in precisions,
            fp16="fp16" in precisions,
            parity_atol=args.parity_atol,
            min_int8_agreement=args.min_int8_agreement,
            fp16_tolerance=args.fp16_tolerance,
            plot=Path(f"{out}.work") / "eval.png" if eval_files else None,
            external_bytes=args.external_data_bytes,
        ),
    )
    try:
        bundle = export_bundle(job)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"bundle {bundle.path}: {bundle.meta.model_id}, precisions {', '.join(bundle.meta.precisions)}")
    return 0
