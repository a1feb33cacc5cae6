"""Chat messages as text: the shapes clients send, the hh-rlhf transcript form, and FormatError for what cannot be
formatted. One rule for every path (training data, the service's protocols, the TRL client)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

Message = Mapping[str, Any]
Text = str | Sequence[Message]

_ROLE_LABELS = {"user": "Human", "human": "Human", "assistant": "Assistant", "gpt": "Assistant", "system": "System"}
ASSISTANT_MARKER = "\n\nAssistant:"


class FormatError(ValueError):
    """A text that cannot be formatted (bad message list, bad template, a conversation the template refuses).

    `pair` is the index of the pair at fault within one `encode_many` call; `message` the index, in the conversation
    the template was given (prompt messages, then completion messages), of the first message it refused.
    """

    def __init__(self, reason: str, pair: int | None = None, message: int | None = None, role: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.pair = pair
        self.message = message
        self.role = role


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
