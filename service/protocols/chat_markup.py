"""A policy's chat markup in a text (ChatML, Llama-3, Mistral [INST], Gemma, Human:/Assistant: transcripts) turned
back into messages, so the reward model can be fed its own formatting instead of another model's template.

RL trainers such as OpenRLHF send the policy's prompt and response as one decoded string with the policy's
special tokens kept (`skip_special_tokens=False`). The reward model was trained on its own format (a text pair, or
its own chat template); fed the policy's markup as plain text it scores something it never saw. Text in none of
these forms is left alone (None), to be scored as plain text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Message = dict[str, str]

# End-of-text and padding strings that policies leave at the end of a decoded response.
END_TEXTS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<end_of_turn>",
    "<eos>",
    "<pad>",
    "</s>",
    "<|end▁of▁sentence|>",
)
_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant", "model": "assistant"}


def strip_end(text: str) -> str:
    """`text` without the end-of-text / padding strings it ends with (and the whitespace around them)."""
    while True:
        trimmed = text.rstrip()
        end = next((e for e in END_TEXTS if trimmed.endswith(e)), None)
        if end is None:
            return text
        text = trimmed[: -len(end)]


def _role(name: str) -> str:
    return _ROLES.get(name.strip().lower(), name.strip().lower())


def _turns(parts: list[str], end: str) -> list[Message]:
    """Messages from a regex split [before, role, body, role, body, ...], each body cut at its end-of-turn."""
    return [
        {"role": _role(parts[i]), "content": strip_end(parts[i + 1].split(end)[0])} for i in range(1, len(parts), 2)
    ]


def _chatml(text: str) -> list[Message] | None:
    if "<|im_start|>" not in text:
        return None
    messages = []
    for block in text.split("<|im_start|>")[1:]:
        head, _, body = block.partition("\n")
        messages.append({"role": _role(head), "content": strip_end(body.split("<|im_end|>")[0])})
    return messages


_LLAMA3 = re.compile(r"<\|start_header_id\|>(.*?)<\|end_header_id\|>\n\n")


def _llama3(text: str) -> list[Message] | None:
    parts = _LLAMA3.split(text.removeprefix("<|begin_of_text|>"))
    if len(parts) < 3:
        return None
    return _turns(parts, "<|eot_id|>")


_GEMMA = re.compile(r"<start_of_turn>(\w+)\n")


def _gemma(text: str) -> list[Message] | None:
    parts = _GEMMA.split(text)
    if len(parts) < 3:
        return None
    return _turns(parts, "<end_of_turn>")


def _mistral(text: str) -> list[Message] | None:
    if "[INST]" not in text:
        return None
    messages = []
    for block in text.split("[INST]")[1:]:
        user, closed, answer = block.partition("[/INST]")
        messages.append({"role": "user", "content": user.strip()})
        if closed:
            messages.append({"role": "assistant", "content": strip_end(answer.strip())})
    return messages


_TRANSCRIPT = re.compile(r"\n\n(Human|Assistant|User|System):[ ]?")


def _transcript(text: str) -> list[Message] | None:
    parts = _TRANSCRIPT.split(text if text.startswith("\n\n") else "\n\n" + text.lstrip("\n"))
    if len(parts) < 3 or not any(parts[i] == "Assistant" for i in range(1, len(parts), 2)):
        return None
    return [{"role": _role(parts[i]), "content": strip_end(parts[i + 1])} for i in range(1, len(parts), 2)]


# End-of-turn text of each markup: a response is cut there (anything after it is not the answer being scored).
END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "gemma": "<end_of_turn>", "mistral": "</s>"}
# Most specific first: special-token markups cannot be mistaken for one another; a transcript is plain text.
PARSERS: tuple[tuple[str, Callable[[str], list[Message] | None]], ...] = (
    ("chatml", _chatml),
    ("llama3", _llama3),
    ("gemma", _gemma),
    ("mistral", _mistral),
    ("transcript", _transcript),
)


def parse(text: str) -> tuple[str, list[Message]] | None:
    """(markup name, messages) for a text in a known chat markup, else None. An open assistant turn at the end
    (a generation prompt) comes back as an assistant message with empty content."""
    for name, parser in PARSERS:
        messages = parser(text)
        if messages:
            return name, messages
    return None
