"""A Hugging Face tokenizer as a bundle records it: its `tokenizers` backend (what the service loads) and the FormatSpec
that says how a pair becomes its text — one chooser for a fit's backbone and an imported reward model alike."""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer

from models.formatting import FormatSpec

FORMATTINGS = ("auto", "pair", "chat", "concat")


class FormatChoiceError(ValueError):
    """A formatting asked for that the tokenizer cannot do (say, `chat` without a chat template)."""


def backend(tokenizer: Any) -> Tokenizer:
    """A copy of the tokenizer's `tokenizers` backend, without padding or truncation (formatting owns both)."""
    copy = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    return template or None


def format_spec(
    tokenizer: Any,
    architecture: str,
    max_length: int,
    formatting: str = "auto",
    append_eos: bool = True,
    truncation: str = "left",
) -> FormatSpec:
    """How a model's text is formatted. `auto`: encoders get the text pair, decoders their chat template, else plain
    concatenation (`concat`). `append_eos`: decoders' texts end with EOS (our fits read the reward there; imported
    models get exactly their documented usage, which appends nothing). `truncation`: which prompt tokens an
    over-long pair keeps (models.truncation; `head-tail` needs the text pair)."""
    if formatting not in FORMATTINGS:
        raise FormatChoiceError(f"formatting {formatting!r}: choose from {', '.join(FORMATTINGS)}")
    template = chat_template(tokenizer)
    kind = formatting
    if kind == "auto":
        kind = "pair" if architecture == "encoder" else ("chat" if template else "concat")
    if kind == "pair":
        return FormatSpec("pair", max_length, truncation=truncation)  # type: ignore[arg-type]
    if truncation != "left":
        raise FormatChoiceError(f"truncation {truncation!r} needs the text-pair formatting (encoders), not {kind}")
    eos = tokenizer.eos_token_id
    if eos is None and (append_eos or kind == "concat"):
        eos = tokenizer.pad_token_id
    if kind == "chat":
        if not template:
            raise FormatChoiceError("formatting chat, but the tokenizer has no chat template")
        tokens = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
        return FormatSpec("chat", max_length, eos, False, template, tokens, append_eos=append_eos)
    return FormatSpec("concat", max_length, eos, add_special_tokens=True, append_eos=append_eos)
