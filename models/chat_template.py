"""Chat templates rendered as transformers' apply_chat_template renders them (same sandbox, same helpers), and the
message a template refuses named when it raises."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from .messages import FormatError, Text, as_messages


class TemplateSpec(Protocol):
    """What rendering needs of a bundle's FormatSpec."""

    @property
    def chat_template(self) -> str | None: ...

    @property
    def template_date(self) -> str: ...

    @property
    def template_tokens(self) -> Mapping[str, str]: ...


def render_chat(spec: TemplateSpec, prompt: Text, completion: Text) -> str:
    """Render the chat template as transformers' apply_chat_template does (same sandbox, same helpers).

    A template that refuses the conversation (Gemma's, Mistral's and Llama-2's `raise_exception` on a system turn
    or on roles that do not alternate) raises FormatError naming the first message it refused.
    """
    messages = as_messages(prompt, "user") + as_messages(completion, "assistant")
    try:
        return _render(spec, messages)
    except Exception as e:  # jinja2's TemplateError, or a template's own TypeError / UndefinedError on odd input
        reason = str(e) or type(e).__name__
        at = _refused_at(spec, messages)
        role = str(messages[at]["role"]) if at is not None else None
        raise FormatError(f"the model's chat template refuses this conversation: {reason}", None, at, role) from None


def _render(spec: TemplateSpec, messages: list[dict[str, Any]]) -> str:
    rendered: str = _template(spec.chat_template or "", spec.template_date).render(
        messages=messages, add_generation_prompt=False, tools=None, documents=None, **spec.template_tokens
    )
    return rendered


def _refused_at(spec: TemplateSpec, messages: list[dict[str, Any]]) -> int | None:
    """The first message whose arrival makes the template refuse: templates check each turn as they reach it, so
    the shortest prefix that fails ends with the message at fault (None: every prefix renders)."""
    for end in range(1, len(messages) + 1):
        try:
            _render(spec, messages[:end])
        except Exception:
            return end - 1
    return None


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
