"""How a (prompt, completion) pair becomes token ids: written once, used by training and serving alike.

Training tokenises through this module (with the `tokenizers` backend of the HF tokenizer) and the service
tokenises through it (with the bundle's tokenizer.json), so train/serve parity holds by construction.
Three kinds, recorded in the bundle as a `FormatSpec`:

- ``pair`` (encoders): the tokenizer's text-pair encoding ``(prompt, completion)``. When the pair is too long
  the prompt loses tokens from its *left* first (the completion, where the quality is, survives); only if the
  completion alone would not fit beside a quarter of the budget is the completion cut, from its right.
- ``chat`` (decoders with a chat template): the template rendered over ``user`` + ``assistant`` messages,
  EOS appended, cut from the left; the reward is read at the last real token (see training.model).
- ``concat`` (decoders without a template): ``prompt + completion``, tokenizer specials, EOS appended, cut from
  the left.

Messages (lists of ``{"role", "content"}``) given to ``pair``/``concat`` are flattened to the hh-rlhf transcript
form (``\\n\\nHuman: …\\n\\nAssistant: …``), so a conversation and its transcript string score identically.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from tokenizers import Tokenizer

Message = Mapping[str, Any]
Text = str | Sequence[Message]
Kind = Literal["pair", "chat", "concat"]
KINDS: tuple[str, ...] = get_args(Kind)

_ROLE_LABELS = {"user": "Human", "human": "Human", "assistant": "Assistant", "gpt": "Assistant", "system": "System"}
ASSISTANT_MARKER = "\n\nAssistant:"


class FormatError(ValueError):
    """A text that cannot be formatted (bad message list, bad template)."""


@dataclass(frozen=True)
class FormatSpec:
    """Everything, beyond tokenizer.json, needed to turn a pair into exactly the ids training used."""

    kind: Kind
    max_length: int
    eos_token_id: int | None = None
    add_special_tokens: bool = True
    chat_template: str | None = None
    # Values the chat template may reference ({{ bos_token }}, {{ eos_token }}, …).
    template_tokens: dict[str, str] = field(default_factory=dict)
    # Templates that call strftime_now() get this fixed date, so a text's reward does not change with the day.
    template_date: str = "2026-01-01"
    # Decoders: append EOS when the text does not end with it (our fits read the reward there). Imported models
    # are fed exactly their documented usage, which appends nothing (the chat template closes the turn itself).
    append_eos: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FormatError(f"unknown formatting kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.max_length < 8:
            raise FormatError(f"max_length must be at least 8, got {self.max_length}")
        if self.kind == "chat" and not self.chat_template:
            raise FormatError("formatting kind 'chat' needs a chat_template")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FormatSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise FormatError(f"unknown formatting fields: {', '.join(sorted(unknown))}")
        return cls(**dict(data))


@dataclass(frozen=True, slots=True)
class Encoded:
    """One pair's model input: ids (and segment ids for encoders that use them), and whether it was cut."""

    ids: list[int]
    type_ids: list[int] | None
    truncated: bool

    def __len__(self) -> int:
        return len(self.ids)

    def key(self) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """Hashable identity of the model input: equal keys get equal rewards (scoring is batch-invariant)."""
        return tuple(self.ids), None if self.type_ids is None else tuple(self.type_ids)


def dedupe(encoded: Sequence[Encoded]) -> tuple[list[Encoded], list[int]]:
    """(distinct inputs, index of each input's distinct copy): score each distinct text once.

    Preference data repeats texts: a prompt with 4 ranked answers makes 6 pairs from 4 texts.
    """
    slots: dict[tuple[tuple[int, ...], tuple[int, ...] | None], int] = {}
    distinct: list[Encoded] = []
    index = []
    for e in encoded:
        slot = slots.setdefault(e.key(), len(distinct))
        if slot == len(distinct):
            distinct.append(e)
        index.append(slot)
    return distinct, index


def plain_message(message: Mapping[str, Any], images: str = "refuse") -> dict[str, str]:
    """A chat message as `{role, content}` with string content, from the shapes trainers and OpenAI-style clients
    send: `content` a string, a list of content blocks (`{"type": "text", "text": …}`; text blocks are joined with
    newlines), missing or None (empty), and `tool_calls` rendered after the content as `<tool_call>{json}</tool_call>`
    lines (the Hermes/Qwen convention). A reward model reads text: an image or audio block is refused
    (`images="refuse"`, FormatError) or dropped (`images="ignore"`)."""
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise FormatError("a message must be an object with a string 'role'")
    content = message.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, Sequence):
        parts = []
        for block in content:
            kind = block.get("type") if isinstance(block, Mapping) else None
            if kind == "text" and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif images != "ignore" or kind not in ("image", "image_url", "input_audio", "audio", "video"):
                raise FormatError(
                    f"a {kind or 'malformed'} content block: a reward model scores text (send text blocks; images "
                    "can be dropped explicitly with images='ignore')"
                )
        text = "\n".join(parts)
    else:
        raise FormatError("message 'content' must be a string, a list of content blocks, or null")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls):
        raise FormatError("'tool_calls' must be a list of objects")
    for call in calls:
        function = call.get("function", call)
        if not isinstance(function, Mapping):
            raise FormatError("a tool call's 'function' must be an object")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            with contextlib.suppress(ValueError):  # OpenAI sends a JSON string; keep one that is not JSON as is
                arguments = json.loads(arguments)
        rendered = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
        text += ("\n" if text else "") + f"<tool_call>{rendered}</tool_call>"
    return {"role": message["role"], "content": text}


def _check_messages(messages: Sequence[Message]) -> None:
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise FormatError(f"message {i} must be an object with string 'role' and 'content'")


def messages_to_text(messages: Sequence[Message]) -> str:
    """Flatten messages into the hh-rlhf transcript form."""
    _check_messages(messages)
    parts = []
    for m in messages:
        role = str(m["role"])
        parts.append(f"\n\n{_ROLE_LABELS.get(role.lower(), role.capitalize())}: {m['content']}")
    return "".join(parts)


def prompt_text(prompt: Text) -> str:
    """A prompt as text; a message list ends with the assistant marker the completion follows."""
    if isinstance(prompt, str):
        return prompt
    return messages_to_text(prompt) + ASSISTANT_MARKER


def completion_text(completion: Text) -> str:
    """A completion as text; an assistant message continues the prompt's ``Assistant:`` marker."""
    if isinstance(completion, str):
        return completion
    _check_messages(completion)
    if not completion:
        return ""
    first, rest = completion[0], completion[1:]
    if str(first["role"]).lower() in ("assistant", "gpt"):
        return " " + str(first["content"]) + messages_to_text(rest)
    return messages_to_text(completion)


def as_messages(text: Text, role: str) -> list[dict[str, Any]]:
    if isinstance(text, str):
        return [{"role": role, "content": text}]
    _check_messages(text)
    return [dict(m) for m in text]


def render_chat(spec: FormatSpec, prompt: Text, completion: Text) -> str:
    """Render the chat template as transformers' apply_chat_template does (same sandbox, same helpers)."""
    return _template(spec.chat_template or "", spec.template_date).render(
        messages=as_messages(prompt, "user") + as_messages(completion, "assistant"),
        add_generation_prompt=False,
        tools=None,
        documents=None,
        **spec.template_tokens,
    )


_TEMPLATES: dict[tuple[str, str], Any] = {}


def _template(source: str, date: str) -> Any:
    key = (source, date)
    if key not in _TEMPLATES:
        from jinja2.exceptions import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, **kw)

        fixed = datetime.fromisoformat(date)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = fixed.strftime
        try:
            _TEMPLATES[key] = env.from_string(source)
        except TemplateError as e:
            raise FormatError(f"chat template does not compile: {e}") from e
    return _TEMPLATES[key]


class Formatter:
    """Turns (prompt, completion) pairs into `Encoded` model inputs with a `tokenizers.Tokenizer`."""

    def __init__(self, tokenizer: Tokenizer, spec: FormatSpec) -> None:
        # tokenizer.json files often carry padding/truncation settings; ours are applied here instead.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.spec = spec
        if spec.kind == "pair":
            self._layout = _pair_layout(tokenizer)
            self._budget = spec.max_length - self._layout.n_special
            if self._budget < 2:
                raise FormatError(f"max_length {spec.max_length} leaves no room for text after special tokens")
        elif spec.append_eos and spec.eos_token_id is None:
            raise FormatError(f"formatting kind {spec.kind!r} appends EOS and needs eos_token_id")

    @classmethod
    def from_file(cls, tokenizer_path: str, spec: FormatSpec) -> Formatter:
        return cls(Tokenizer.from_file(tokenizer_path), spec)

    def encode(self, prompt: Text, completion: Text) -> Encoded:
        return self.encode_many([prompt], [completion])[0]

    def encode_many(self, prompts: Sequence[Text], completions: Sequence[Text]) -> list[Encoded]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if self.spec.kind == "pair":
            return self._encode_pairs(prompts, completions)
        return self._encode_decoder(prompts, completions)

    def _encode_pairs(self, prompts: Sequence[Text], completions: Sequence[Text]) -> list[Encoded]:
        p_texts = [prompt_text(p) for p in prompts]
        c_texts = [completion_text(c) for c in completions]
        # GRPO/best-of-n send many completions per prompt: tokenise each distinct prompt once.
        unique = list(dict.fromkeys(p_texts))
        p_ids = dict(zip(unique, (e.ids for e in self._encode_batch(unique, False)), strict=True))
        c_ids = [e.ids for e in self._encode_batch(c_texts, False)]
        layout, budget = self._layout, self._budget
        out = []
        for pt, c in zip(p_texts, c_ids, strict=True):
            p = p_ids[pt]
            truncated = len(p) + len(c) > budget
            if truncated:
                keep_c = min(len(c), budget - min(len(p), budget // 4))
                keep_p = budget - keep_c
                p = p[len(p) - keep_p :] if keep_p else []
                c = c[:keep_c]
            out.append(layout.build(p, c, truncated))
        return out

    def _encode_decoder(self, prompts: Sequence[Text], completions: Sequence[Text]) -> list[Encoded]:
        spec = self.spec
        if spec.kind == "chat":
            texts = [render_chat(spec, p, c) for p, c in zip(prompts, completions, strict=True)]
            specials = False  # the template writes its own special tokens, as apply_chat_template assumes
        else:
            texts = [prompt_text(p) + completion_text(c) for p, c in zip(prompts, completions, strict=True)]
            specials = spec.add_special_tokens
        eos = spec.eos_token_id
        out = []
        for enc in self._encode_batch(texts, specials):
            ids = enc.ids
            if spec.append_eos and (not ids or ids[-1] != eos):
                ids.append(int(eos))  # type: ignore[arg-type]
            truncated = len(ids) > spec.max_length
            out.append(Encoded(ids[-spec.max_length :] if truncated else ids, None, truncated))
        return out

    def _encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[Any]:
        return self.tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens) if texts else []


@dataclass(frozen=True)
class _PairLayout:
    """How the post-processor wraps a pair: pre + A + mid + B + suf, each part with its segment ids."""

    pre: list[int]
    pre_types: list[int]
    type_a: int
    mid: list[int]
    mid_types: list[int]
    type_b: int
    suf: list[int]
    suf_types: list[int]

    @property
    def n_special(self) -> int:
        return len(self.pre) + len(self.mid) + len(self.suf)

    def build(self, a: list[int], b: list[int], truncated: bool = False) -> Encoded:
        ids = self.pre + a + self.mid + b + self.suf
        types = self.pre_types + [self.type_a] * len(a) + self.mid_types + [self.type_b] * len(b) + self.suf_types
        return Encoded(ids, types, truncated)


def _pair_layout(tok: Tokenizer) -> _PairLayout:
    """Find the pair layout once from the tokenizer's own post-processor, then check it on a second pair.

    Building ids by list concatenation is fast and safe with shared prompt encodings, and equals post_process.
    """
    probe_a = tok.encode("alpha beta gamma", add_special_tokens=False)
    probe_b = tok.encode("delta epsilon", add_special_tokens=False)
    full = tok.post_process(probe_a, probe_b, add_special_tokens=True)
    ids, types = full.ids, full.type_ids
    la, lb = len(probe_a.ids), len(probe_b.ids)
    for sa in range(len(ids) - la - lb + 1):
        if ids[sa : sa + la] != probe_a.ids:
            continue
        for sb in range(sa + la, len(ids) - lb + 1):
            if ids[sb : sb + lb] != probe_b.ids:
                continue
            layout = _PairLayout(
                ids[:sa],
                types[:sa],
                types[sa],
                ids[sa + la : sb],
                types[sa + la : sb],
                types[sb],
                ids[sb + lb :],
                types[sb + lb :],
            )
            a = tok.encode("What is the capital of France?", add_special_tokens=False)
            b = tok.encode("Paris, on the Seine.", add_special_tokens=False)
            want = tok.post_process(a, b, add_special_tokens=True)
            got = layout.build(a.ids, b.ids)
            if want.ids == got.ids and want.type_ids == got.type_ids:
                return layout
    raise FormatError("the tokenizer's pair template is not prefix + A + middle + B + suffix")
