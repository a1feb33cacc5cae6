"""Where the admin token comes from: the environment, a file, or generated into a file only the operator can read.

Never the command line (it shows in `ps` to every user of the machine) and never the log (logs are shipped and
kept): a generated token is written to a 0600 file and only that file's path is printed.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

ENV = "COLLECT_ADMIN_TOKEN"
MIN_LENGTH = 16


class TokenError(ValueError):
    """An admin token that cannot be used; one line."""


def _check(token: str, where: str) -> str:
    token = token.strip()
    if len(token) < MIN_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise TokenError(f"{where}: the admin token must be at least {MIN_LENGTH} printable characters, no spaces")
    return token


def read_token_file(path: Path) -> str:
    """The token in `path`, refusing a file other users could read (someone else may already have it)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TokenError(f"{path}: cannot read the admin token file: {e.strerror or e}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenError(f"{path}: readable by others (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}")
    return _check(text, str(path))


def write_token_file(path: Path) -> str:
    """A new token in a new file `path`, created readable and writable by its owner only (never widened by the umask
    or left readable between create and chmod)."""
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise TokenError(f"{path}: cannot create the admin token file: {e.strerror or e}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token


def admin_token(token_file: Path | None, default_file: Path) -> tuple[str, str]:
    """(token, where it came from). Order: $COLLECT_ADMIN_TOKEN, then `token_file` (or `default_file`) when it
    exists, else a new token generated into that file."""
    if os.environ.get(ENV):
        return _check(os.environ[ENV], f"${ENV}"), f"${ENV}"
    path = token_file or default_file
    if path.exists():
        return read_token_file(path), str(path)
    return write_token_file(path), f"{path} (new, mode 600)"
