"""A policy's rollout as the reward model's pair: how OpenRLHF's `query` strings (the policy's prompt + response,
decoded with the policy's special tokens) and lone texts sent to the vLLM and TEI endpoints become the pairs the
reward model scores, in its own formatting.

OpenRLHF 0.11 posts `{"query": [q], "prompts": [p], "labels": [l]}` per rollout, where `p` is the dataset prompt
after the policy's chat template and `q = decode(prompt_ids + response_ids, skip_special_tokens=False)`. The
prompt is cut from the left when it is longer than its budget, and decoding need not round-trip, so `q` does not
always start with `p`: a legitimate rollout must still get a reward, never a 4xx (after 5 failures the training
step fails). Each query is split at its prompt (exact prefix; else the longest suffix of the prompt that begins the
query; else the query is scored whole), the policy's chat markup is turned back into messages (chat_markup), and
trailing end-of-text strings are dropped; the reward model's own formatting takes it from there. A conversation
that the reward model's chat template refuses is rewritten (`repairs`) rather than refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from models.messages import ASSISTANT_MARKER, Text, messages_to_text

from . import chat_markup

# A shared stretch shorter than this between the end of a prompt and the start of a query is a coincidence.
MIN_OVERLAP = 8


@dataclass(frozen=True)
class Split:
    prompt: str
    completion: str
    how: str  # prefix | suffix | whole | no_prompt


def split_query(query: str, prompt: str | None) -> Split:
    """Where the response starts in `query`, given the prompt OpenRLHF sent with it (or None)."""
    if prompt is None:
        cut = query.rfind(ASSISTANT_MARKER)
        if cut >= 0:  # an hh-style transcript: split at the last assistant turn, as training did
            end = cut + len(ASSISTANT_MARKER)
            return Split(query[:end], query[end:], "no_prompt")
        return Split("", query, "no_prompt")
    if query.startswith(prompt):
        return Split(prompt, query[len(prompt) :], "prefix")
    # A cut through a multi-byte character decodes to replacement characters at the very start.
    lead = len(query) - len(query.lstrip("\ufffd"))
    overlap = longest_suffix_prefix(prompt, query[lead:])
    if overlap >= min(MIN_OVERLAP, len(prompt)) and overlap:
        # The prompt was cut from the left: the response still follows the whole prompt the policy answered.
        return Split(prompt, query[lead + overlap :], "suffix")
    return Split("", query, "whole")


def longest_suffix_prefix(prompt: str, query: str) -> int:
    """Length of the longest suffix of `prompt` that is also a prefix of `query` (KMP failure function, linear)."""
    pattern = query[: len(prompt)]
    text = pattern + "\x00" + prompt
    fail = [0] * len(text)
    for i in range(1, len(text)):
        k = fail[i - 1]
        while k and text[i] != text[k]:
            k = fail[k - 1]
        if text[i] == text[k]:
            k += 1
        fail[i] = k
    return min(fail[-1], len(pattern)) if text else 0


@dataclass(frozen=True)
class RewardPair:
    prompt: Text
    completion: Text
    how: str  # the Split's
    markup: str  # the policy markup recognised (chatml, llama3, gemma, mistral, transcript), or "none"


def to_pair(query: str, prompt: str | None) -> RewardPair:
    """The (prompt, completion) the reward model scores for one OpenRLHF query."""
    split = split_query(query, prompt)
    parsed = chat_markup.parse(split.prompt) if split.prompt else None
    if parsed is not None:
        markup, messages = parsed
        response = split.completion
        last = messages[-1]
        if last["role"] == "assistant":  # the generation prompt's open assistant turn (or a prefilled start of it)
            messages, response = messages[:-1], last["content"] + response
        end_of_turn = chat_markup.END_OF_TURN.get(markup)
        if end_of_turn:
            response = response.split(end_of_turn)[0]
        # Templates put a space or newline between the turn header and the answer; the message content has none.
        answer = [{"role": "assistant", "content": chat_markup.strip_end(response).lstrip()}]
        return RewardPair(messages, answer, split.how, markup)
    whole = chat_markup.parse(query)
    if whole is not None and whole[1][-1]["role"] == "assistant" and len(whole[1]) > 1:
        markup, messages = whole
        return RewardPair(messages[:-1], messages[-1:], split.how, markup)
    return RewardPair(split.prompt, chat_markup.strip_end(split.completion), split.how, "none")


def repairs(prompt: Text, completion: Text) -> Iterator[tuple[str, Text, Text]]:
    """Rewrites of a conversation the reward model's chat template refused, boldest last, so a legitimate rollout
    still gets a reward (Gemma's template refuses a system turn; Mistral's and Llama-2's refuse roles that do not
    alternate): the system turns folded into the first user turn; then also every role other than the assistant's
    made the user's and consecutive turns of one role joined; then the whole prompt as one user turn (its
    transcript). The completion is never changed."""
    if isinstance(prompt, str):
        return
    messages = [dict(m) for m in prompt]
    folded = fold_system(messages)
    yield "system_folded", folded, completion
    yield "roles_merged", merge_roles(folded), completion
    yield "flattened", [{"role": "user", "content": messages_to_text(messages).strip()}], completion


def fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """System turns' text put at the start of the first user turn (a user turn of its own if there is none)."""
    system = "\n\n".join(str(m["content"]) for m in messages if m["role"] == "system")
    rest = [m for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for i, m in enumerate(rest):
        if m["role"] == "user":
            return [*rest[:i], {**m, "content": f"{system}\n\n{m['content']}"}, *rest[i + 1 :]]
    return [{"role": "user", "content": system}, *rest]


def merge_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """User and assistant turns only (tool results and the like become the user's), consecutive turns of one role
    joined, starting with a user turn."""
    merged: list[dict[str, Any]] = []
    for m in messages:
        role = "assistant" if m["role"] == "assistant" else "user"
        if merged and merged[-1]["role"] == role:
            merged[-1] = {"role": role, "content": f"{merged[-1]['content']}\n\n{m['content']}"}
        else:
            merged.append({"role": role, "content": str(m["content"])})
    if merged and merged[0]["role"] != "user":
        merged.insert(0, {"role": "user", "content": ""})
    return merged
