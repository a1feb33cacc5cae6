"""An existing Hugging Face reward model (`*ForSequenceClassification`, local or from the hub) made ready for the
export (`python -m training.export`): the checks that it can be served faithfully, and how its text becomes tokens,
decided the way its documented usage scores it.

- Encoders (BERT, RoBERTa, DeBERTa: OpenAssistant's reward models) score a text pair `tokenizer(question,
  answer)`: formatting `pair`, the reward is the head's logit.
- Decoders (Llama, Qwen, Mistral, Gemma, GPT-2: Skywork-Reward, GRM, TRL-trained models) score the conversation
  through the tokenizer's own chat template, tokenised as `apply_chat_template(..., tokenize=True)` does (the
  template writes its own BOS; nothing is appended): formatting `chat`. Without a template: `concat`, prompt +
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
from dataclasses import dataclass
from typing import Any

from models.formatting import FormatSpec

from .model import RewardModel, architecture_of, model_max_length
from .tokens import FormatChoiceError, format_spec

log = logging.getLogger("training.imported")
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
    truncation: str = "left",
) -> Imported:
    """Load `source` (folder or hub id) in fp32, check it, and decide its formatting; ImportRefused if it cannot be
    served as transformers scores it."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

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
    limit = model_max_length(model, max_length or 10**9)
    if max_length is None:
        limit = min(limit, DEFAULT_MAX_LENGTH)
    try:
        kind = "concat" if formatting == "plain" else formatting  # `plain`: the name older bundles' docs used
        spec = format_spec(tokenizer, architecture, limit, kind, append_eos, truncation)
    except FormatChoiceError as e:
        raise ImportRefused(f"{source}: --{e}") from None
    reward_model = RewardModel(model, architecture, pooling, index, heads=len(objectives) or 1).eval()
    label = str((getattr(config, "id2label", None) or {}).get(index, f"LABEL_{index}"))
    head = reward_model.describe() | {"read_at": read, "label": label, "source": source}
    log.info("%s: %s %s, formatting %s, reward read at %s", source, config.model_type, architecture, spec.kind, read)
    return Imported(reward_model, tokenizer, spec, head, pad_for_batches, objectives)


def _name(label: object) -> str:
    """A label as an objective name (letters, digits, _ and -)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", str(label)).strip("_") or "label"
    return name if re.match(r"[A-Za-z_]", name) else f"label_{name}"
