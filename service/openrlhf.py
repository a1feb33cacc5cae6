"""OpenRLHF's /get_reward protocol: how its `query` strings (prompt + response) become the pairs the model scores."""

from __future__ import annotations

from models.formatting import ASSISTANT_MARKER


def split_query(query: str, prompt: str | None) -> tuple[str, str]:
    """(prompt, completion) for one query: cut at its prompt when given, else at its last assistant turn."""
    if prompt is not None:
        if query.startswith(prompt):
            return prompt, query[len(prompt) :]
        stripped = query.lstrip()
        if stripped.startswith(prompt.lstrip()):
            return prompt, stripped[len(prompt.lstrip()) :]
        return "", query  # scored whole: a truncated or re-decoded prompt no longer prefixes its query
    cut = query.rfind(ASSISTANT_MARKER)
    if cut >= 0:  # an hh-style transcript: split at the last assistant turn, as training did
        end = cut + len(ASSISTANT_MARKER)
        return query[:end], query[end:]
    return "", query
