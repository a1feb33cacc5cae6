"""Formatting reproduces the Hugging Face tokenizer's ids exactly, truncates as documented, renders templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from models.chat_template import render_chat
from models.formatting import FormatSpec, Formatter
from models.messages import FormatError, completion_text, prompt_text

PAIRS = [
    ("What is the capital of France?", "Paris."),
    ("\n\nHuman: hi there\n\nAssistant: hello!\n\nHuman: tell me a joke\n\nAssistant:", " Why did the chicken…"),
    ("Ünïcödé prompt with emoji 🙂 and CJK 漢字", "réponse"),
    ("", "an answer to nothing"),
]


def hf(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def formatter_for(tokenizer: Any, spec: FormatSpec) -> Formatter:
    return Formatter(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()), spec)


def test_pair_encoding_equals_hf_text_pair(minilm_path: str) -> None:
    tok = hf(minilm_path)
    fmt = formatter_for(tok, FormatSpec("pair", 512))
    for (prompt, completion), enc in zip(PAIRS, fmt.encode_many(*zip(*PAIRS, strict=True)), strict=True):
        want = tok(prompt, completion)
        assert enc.ids == want["input_ids"] and enc.type_ids == want["token_type_ids"] and not enc.truncated
    # An empty completion (RL policies emit them) is still a pair; HF's Python layer would drop the empty B.
    empty = fmt.encode("a prompt with no answer", "")
    backend = tok.backend_tokenizer
    a, b = (
        backend.encode("a prompt with no answer", add_special_tokens=False),
        backend.encode("", add_special_tokens=False),
    )
    assert empty.ids == backend.post_process(a, b).ids and empty.ids[-2:] == [tok.sep_token_id] * 2


def test_truncation_cuts_the_prompt_from_the_left_first(minilm_path: str) -> None:
    tok = hf(minilm_path)
    fmt = formatter_for(tok, FormatSpec("pair", 32))
    prompt = " ".join(f"word{i}" for i in range(100)) + " final question?"
    enc = fmt.encode(prompt, "short answer")
    assert enc.truncated and len(enc) == 32
    text = tok.decode(enc.ids)
    assert "final question?" in text and "short answer" in text and "word0 " not in text
    # A completion longer than the budget keeps its head and leaves the prompt's tail a quarter of the room.
    long_answer = " ".join(f"answer{i}" for i in range(100))
    enc = fmt.encode("the question", long_answer)
    assert len(enc) == 32 and "question" in tok.decode(enc.ids) and "answer0" in tok.decode(enc.ids).replace(" ", "")


def test_messages_flatten_to_the_transcript_they_stand_for(minilm_path: str) -> None:
    tok = hf(minilm_path)
    fmt = formatter_for(tok, FormatSpec("pair", 128))
    messages = [{"role": "user", "content": "hi there"}]
    answer = [{"role": "assistant", "content": "hello!"}]
    assert prompt_text(messages) + completion_text(answer) == "\n\nHuman: hi there\n\nAssistant: hello!"
    assert fmt.encode(messages, answer) == fmt.encode("\n\nHuman: hi there\n\nAssistant:", " hello!")
    with pytest.raises(FormatError, match="message 0"):
        fmt.encode([{"role": "user"}], "x")


def test_chat_template_matches_apply_chat_template(tiny_llama: Path) -> None:
    from training.tokens import format_spec

    tok = hf(tiny_llama)
    spec = format_spec(tok, "decoder", 64)
    assert spec.kind == "chat"
    messages = [{"role": "user", "content": "tell me about tea"}, {"role": "assistant", "content": "tea is kind"}]
    assert render_chat(spec, "tell me about tea", "tea is kind") == tok.apply_chat_template(messages, tokenize=False)
    enc = formatter_for(tok, spec).encode("tell me about tea", "tea is kind")
    want = tok.apply_chat_template(messages, tokenize=True)
    want = list(want["input_ids"]) if hasattr(want, "keys") else list(want)
    assert enc.ids[: len(want)] == want and enc.ids[-1] == tok.eos_token_id and enc.type_ids is None
    long = formatter_for(tok, spec).encode("tea " * 200, "tea is kind")
    assert long.truncated and len(long) == 64 and long.ids[-1] == tok.eos_token_id  # cut from the left


def test_concat_appends_eos_and_keeps_the_end(tiny_gpt2: Path) -> None:
    from training.tokens import format_spec

    tok = hf(tiny_gpt2)
    spec = format_spec(tok, "decoder", 16)
    assert spec.kind == "concat"
    fmt = formatter_for(tok, spec)
    enc = fmt.encode("Question about tea:", " tea is kind")
    assert enc.ids == tok("Question about tea: tea is kind")["input_ids"] + [tok.eos_token_id]
    cut = fmt.encode("tea " * 50, " the end")
    assert cut.truncated and len(cut) == 16 and cut.ids[-1] == tok.eos_token_id


def test_bad_specs_are_refused() -> None:
    with pytest.raises(FormatError, match="unknown formatting kind"):
        FormatSpec("poetry", 64)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="needs a chat_template"):
        FormatSpec("chat", 64, eos_token_id=2)
    with pytest.raises(FormatError, match="unknown formatting fields"):
        FormatSpec.from_dict({"kind": "pair", "max_length": 64, "colour": "blue"})
