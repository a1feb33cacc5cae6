"""How a (prompt, completion) pair becomes token ids: written once, used by training and serving alike.

Training tokenises through this module (with the `tokenizers` backend of the HF tokenizer) and the service
tokenises through it (with the bundle's tokenizer.json), so train/serve parity holds by construction.
Three kinds, recorded in the bundle as a `FormatSpec`:

- ``pair`` (encoders): the tokenizer's text-pair encoding ``(prompt, completion)``. When the pair is too long
  the prompt is cut first by the spec's `truncation` policy (models.truncation: ``left`` keeps its tail,
  ``head-tail`` its head and tail around a marker); only if the completion alone would not fit beside a quarter
  of the budget is the completion cut, from its right.
- ``chat`` (decoders with a chat template): the template rendered over ``user`` + ``assistant`` messages,
  EOS appended, cut from the left; the reward is read at the last real token (see training.model).
- ``concat`` (decoders without a template): ``prompt + completion``, tokenizer specials, EOS appended, cut from
  the left.

Messages (lists of ``{"role", "content"}``) given to ``pair``/``concat`` are flattened to the hh-rlhf transcript
form (``\\n\\nHuman: …\\n\\nAssistant: …``, models.messages), so a conversation and its transcript string score
identically; chat templates are rendered by models.chat_template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from tokenizers import Tokenizer

from .chat_template import render_chat
from .messages import FormatError, Text, completion_text, prompt_text
from .truncation import DEFAULT_MARKER, TRUNCATIONS, Truncation, cut_pair

Kind = Literal["pair", "chat", "concat"]
KINDS: tuple[str, ...] = get_args(Kind)


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
    # Which prompt tokens an over-long pair keeps (models.truncation); schema 3. Older bundles mean "left".
    truncation: Truncation = "left"
    # The text put where head-tail cut the prompt's middle, tokenised with the bundle's tokenizer.
    truncation_marker: str = DEFAULT_MARKER

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FormatError(f"unknown formatting kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.max_length < 8:
            raise FormatError(f"max_length must be at least 8, got {self.max_length}")
        if self.kind == "chat" and not self.chat_template:
            raise FormatError("formatting kind 'chat' needs a chat_template")
        if self.truncation not in TRUNCATIONS:
            raise FormatError(f"unknown truncation {self.truncation!r} (known: {', '.join(TRUNCATIONS)})")
        # Decoders cut one rendered text, where the prompt's head is not separable from the template's markup.
        if self.truncation == "head-tail" and self.kind != "pair":
            raise FormatError(f"truncation 'head-tail' needs the 'pair' formatting (encoders), not {self.kind!r}")

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
            marker = spec.truncation_marker if spec.truncation == "head-tail" else ""
            self._marker = tokenizer.encode(marker, add_special_tokens=False).ids if marker else []
        elif spec.append_eos and spec.eos_token_id is None:
            raise FormatError(f"formatting kind {spec.kind!r} appends EOS and needs eos_token_id")

    @classmethod
    def from_file(cls, tokenizer_path: str, spec: FormatSpec) -> Formatter:
        return cls(Tokenizer.from_file(tokenizer_path), spec)

    def encode(self, prompt: Text, completion: Text) -> Encoded:
        return self.encode_many([prompt], [completion])[0]

    def encode_many(self, prompts: Sequence[Text], completions: Sequence[Text]) -> list[Encoded]:
        """Every pair's model input; the first pair that cannot be formatted raises FormatError (with `.pair`)."""
        encoded, failures = self.try_encode_many(prompts, completions)
        if failures:
            raise failures[min(failures)]
        return [e for e in encoded if e is not None]

    def try_encode_many(
        self, prompts: Sequence[Text], completions: Sequence[Text]
    ) -> tuple[list[Encoded | None], dict[int, FormatError]]:
        """Every pair's model input, or None and its FormatError (keyed by the pair's index) for a pair that cannot
        be formatted: one bad conversation does not stop the others, and the caller decides what to do about it."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        texts: list[tuple[str, str] | str | None] = []
        failures: dict[int, FormatError] = {}
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            try:
                texts.append(self._text(p, c))
            except FormatError as e:
                e.pair = i
                failures[i] = e
                texts.append(None)
        good = [t for t in texts if t is not None]
        encoded = iter(self._encode_pairs(good) if self.spec.kind == "pair" else self._encode_decoder(good))
        return [None if t is None else next(encoded) for t in texts], failures

    def _text(self, prompt: Text, completion: Text) -> tuple[str, str] | str:
        """What the tokenizer reads for one pair: (prompt, completion) texts for the pair layout, else one text."""
        if self.spec.kind == "pair":
            return prompt_text(prompt), completion_text(completion)
        if self.spec.kind == "chat":
            return render_chat(self.spec, prompt, completion)
        return prompt_text(prompt) + completion_text(completion)

    def _encode_pairs(self, texts: Sequence[Any]) -> list[Encoded]:
        p_texts = [p for p, _ in texts]
        c_texts = [c for _, c in texts]
        # GRPO/best-of-n send many completions per prompt: tokenise each distinct prompt once.
        unique = list(dict.fromkeys(p_texts))
        p_ids = dict(zip(unique, (e.ids for e in self._encode_batch(unique, False)), strict=True))
        c_ids = [e.ids for e in self._encode_batch(c_texts, False)]
        layout, budget, policy, marker = self._layout, self._budget, self.spec.truncation, self._marker
        out = []
        for pt, c in zip(p_texts, c_ids, strict=True):
            p = p_ids[pt]
            if len(p) + len(c) > budget:
                out.append(layout.build(*cut_pair(p, c, budget, policy, marker)))
            else:
                out.append(layout.build(p, c))
        return out

    def _encode_decoder(self, texts: Sequence[Any]) -> list[Encoded]:
        spec = self.spec
        # A chat template writes its own special tokens, as apply_chat_template assumes.
        specials = False if spec.kind == "chat" else spec.add_special_tokens
        eos = spec.eos_token_id
        out = []
        for enc in self._encode_batch(list(texts), specials):
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
