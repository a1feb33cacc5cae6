"""The code verifier: the completion's program (its last fenced code block, or the whole text) run against the sample's
tests in the sandbox — stdin/stdout cases (`[{"input", "output"}]`) or Python assert-style tests (a string of
asserts, or a list of them) — and the fraction passed.

Each test case runs as its own sandboxed process. An assert-style case passes when the program followed by the
assert exits 0, so a program that deliberately exits early (`os._exit(0)`) passes it: prefer stdin/stdout cases
where a policy could learn that (its output must then be right).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .sandbox import Run, Sandbox

Extraction = Literal["last_fence", "whole"]
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
# What a program's error output says when the sandbox, not the program's logic, stopped it.
_SANDBOXED = re.compile(
    r"MemoryError|BlockingIOError|Resource temporarily unavailable|Network is unreachable|Errno 101|"
    r"Read-only file system|Permission denied|PermissionError|No such file or directory: '/(?!tmp)|"
    r"Operation not permitted|File size limit exceeded"
)


# The CPU-time limit's signals (bwrap reports a child killed by signal s as 128 + s): the program ran out of time.
CPU_SPENT = (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL)


class NoCode(Exception):
    """The completion holds no program to run."""


def extract(completion: str, rule: Extraction) -> str:
    if rule == "whole":
        code = completion
    else:
        blocks = _FENCE.findall(completion)
        python = [body for lang, body in blocks if lang.lower() in ("", "python", "py", "python3")]
        code = (python or [body for _, body in blocks] or [""])[-1]
    if not code.strip():
        raise NoCode("no code block in the completion")
    return code


@dataclass(frozen=True)
class Case:
    program: str
    stdin: str = ""
    expected: str | None = None  # stdout to match (stdin/stdout tests); None: exit 0 (assert tests)


def cases(code: str, tests: Any) -> list[Case]:
    """The test cases a reference describes: {"tests": [...]} or the list itself; each case {"input", "output"}, or
    an assert statement (a string of several asserts is one case per line that starts with `assert`)."""
    if isinstance(tests, dict):
        tests = tests.get("tests", tests.get("test"))
    if isinstance(tests, str):
        lines = [line for line in tests.splitlines() if line.strip()]
        asserts = [line for line in lines if line.lstrip().startswith("assert")]
        tests = asserts if asserts and len(asserts) == len(lines) else [tests]
    if not isinstance(tests, list) or not tests:
        raise ValueError('the reference has no tests (give {"tests": [...]}: stdin/stdout cases or asserts)')
    out = []
    for test in tests:
        if isinstance(test, dict) and "output" in test:
            out.append(Case(code, str(test.get("input", "")), str(test["output"])))
        elif isinstance(test, str):
            out.append(Case(f"{code}\n\n{test}\n"))
        else:
            raise ValueError(f"a test must be {{'input', 'output'}} or an assert string, got {str(test)[:80]!r}")
    return out


def _same_output(got: str, want: str) -> bool:
    """Outputs compared as judges do: line by line, trailing whitespace and trailing empty lines ignored."""
    lines = [line.rstrip() for line in got.rstrip().splitlines()]
    return lines == [line.rstrip() for line in want.rstrip().splitlines()]


def passed(case: Case, run: Run) -> bool:
    if run.returncode != 0:
        return False
    return case.expected is None or _same_output(run.stdout, case.expected)


async def verify(sandbox: Sandbox, completion: str, tests: Any, rule: Extraction) -> tuple[float, str | None]:
    """(fraction of the tests passed, failure): failure "timeout" when a case hit the wall deadline, "sandbox" when
    a limit or the isolation stopped the program (memory, processes, network, files outside its temp dir)."""
    todo: Sequence[Case] = cases(extract(completion, rule), tests)
    runs = await asyncio.gather(*(sandbox.run(c.program, c.stdin) for c in todo))
    score = sum(passed(c, r) for c, r in zip(todo, runs, strict=True)) / len(todo)
    if any(r.timed_out or r.returncode in CPU_SPENT for r in runs):
        return score, "timeout"
    if any(r.returncode not in (0, 1) or _SANDBOXED.search(r.stderr) for r in runs):
        return score, "sandbox"
    return score, None
