"""The Dockerfile read as instructions (no Docker engine runs here), and an image's command run locally with this
Python: the helpers of test_dockerfile.py and test_k8s.py."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    name: str | None
    parent: str  # an image or an earlier stage's name
    steps: list[tuple[str, str]]  # (INSTRUCTION, its arguments), continuation lines joined

    def args(self, instruction: str) -> list[str]:
        return [rest for name, rest in self.steps if name == instruction]

    def exec_form(self, instruction: str) -> list[str]:
        """The one ENTRYPOINT/CMD of this stage, which must be JSON (the shell form would not get signals)."""
        [rest] = self.args(instruction)
        found = json.loads(rest)
        assert isinstance(found, list) and all(isinstance(x, str) for x in found), (instruction, rest)
        return found

    def health_command(self) -> list[str]:
        [check] = self.args("HEALTHCHECK")
        options, _, command = check.partition("CMD ")
        assert "--timeout=" in options and "--interval=" in options, check
        found = json.loads(command)
        assert isinstance(found, list)
        return found


def stages(text: str | None = None) -> list[Stage]:
    """The stages in order. Comment lines are dropped, also inside a continued instruction (as Docker does)."""
    lines = [line for line in (text or DOCKERFILE.read_text()).splitlines() if not line.lstrip().startswith("#")]
    logical: list[str] = []
    pending = ""
    for line in lines:
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            logical.append(" ".join(pending.split()))
        pending = ""
    assert not pending.strip(), "the Dockerfile ends inside a continued line"
    found: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            words = rest.split()
            assert len(words) == 1 or (len(words) == 3 and words[1].upper() == "AS"), line
            found.append(Stage(words[2] if len(words) == 3 else None, words[0], []))
        elif found:  # ARGs before the first FROM are global
            found[-1].steps.append((instruction.upper(), rest))
    return found


def stage(name: str) -> Stage:
    [found] = [s for s in stages() if s.name == name]
    return found


def built_from(name: str) -> list[Stage]:
    """`name` and the stages it is built on, nearest first."""
    named = {s.name: s for s in stages() if s.name}
    chain = [named[name]]
    while chain[-1].parent in named:
        chain.append(named[chain[-1].parent])
    return chain


def venv_stage(target: Stage) -> Stage:
    """The stage whose /opt/venv `target` copies."""
    [source] = [re.fullmatch(r"--from=(\S+) /opt/venv /opt/venv", rest) for rest in target.args("COPY")]
    assert source is not None
    return stage(source.group(1))


def image_tag(target: str) -> str:
    """The tag the Dockerfile's own usage comment builds `target` as (`docker build -t TAG --target TARGET .`)."""
    [tag] = re.findall(rf"docker build -t (\S+) --target {re.escape(target)} \.", DOCKERFILE.read_text())
    return tag


@contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """A working folder the process cannot write (the pod's root filesystem is read-only)."""
    path.mkdir()
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)


@contextmanager
def running(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[Any]]:
    """A subprocess, killed if the test leaves before it ends; its output goes to `log`."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_healthy(proc: subprocess.Popen[Any], port: int, log: Path, path: str = "/healthz") -> None:
    """Until `path` answers 200 {"status": "ok"}; fails with the server's output if it exits or never does."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
                assert answer.status == 200 and json.load(answer) == {"status": "ok"}
                return
        except urllib.error.HTTPError as e:  # it answers, but not 200: no point waiting
            pytest.fail(f"{path}: HTTP {e.code}")
        except OSError:  # not listening yet
            time.sleep(0.05)
    pytest.fail(f"{path} did not answer within 60 s: {log.read_text(errors='replace')[-2000:]}")
