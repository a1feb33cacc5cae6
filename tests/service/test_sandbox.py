"""The code verifier's sandbox against a policy that misbehaves: each attempt gets its failure class, nothing escapes
(the host's files are untouched, no process of it survives), and ordinary code still scores."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.core.verifiers import code
from service.core.verifiers.sandbox import FIRST_UID, Limits, Sandbox, SandboxUnavailable

ADD = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}
ESCAPED = Path(__file__).resolve().parent / "escaped-from-the-sandbox"  # a host path the program must not reach
# name: (program, tests, expected score, expected failure)
ATTEMPTS = {
    "correct": ("def add(a, b):\n    return a + b", ADD, 1.0, None),
    "wrong": ("def add(a, b):\n    return a - b", ADD, 0.0, None),
    "half right": ("def add(a, b):\n    return 3", ADD, 0.5, None),
    "stdin/stdout": ("print(int(input()) * 2)", {"tests": [{"input": "2", "output": "4"}]}, 1.0, None),
    "infinite loop": ("while True:\n    pass", ADD, 0.0, "timeout"),
    "fork bomb": ("import os\nwhile True:\n    os.fork()", ADD, 0.0, "sandbox"),
    "memory hog": ("x = bytearray(8 << 30)", ADD, 0.0, "sandbox"),
    "socket": ("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)", ADD, 0.0, "sandbox"),
    "write outside": (f"open('{ESCAPED}', 'w').write('out')", ADD, 0.0, "sandbox"),
    "write /usr": ("open('/usr/escaped', 'w').write('out')", ADD, 0.0, "sandbox"),
    "read outside": ("print(open('/etc/hostname').read())", ADD, 0.0, "sandbox"),
    "read the service": (f"print(open('{Path(__file__).resolve()}').read())", ADD, 0.0, "sandbox"),
}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    try:
        return Sandbox.detect(False, 4, Limits(wall_seconds=3, cpu_seconds=2, memory_mb=256, processes=16))
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox on this machine: {e} (.ci/run installs bubblewrap)")


def running_sandbox_processes() -> list[str]:
    """Live (not zombie) processes of the sandbox's uids, as `ps` shows them."""
    rows = subprocess.run(["ps", "-eo", "uid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [r for r in rows.splitlines() if int(r.split()[0]) >= FIRST_UID and not r.split()[1].startswith("Z")]


def test_every_escape_attempt_gets_its_failure_class_and_nothing_escapes(sandbox: Sandbox) -> None:
    ESCAPED.unlink(missing_ok=True)

    async def main() -> dict[str, tuple[float, str | None, float]]:
        async def one(name: str) -> tuple[float, str | None, float]:
            program, tests, _, _ = ATTEMPTS[name]
            started = time.monotonic()
            score, failure = await code.verify(sandbox, f"```python\n{program}\n```", tests, "last_fence")
            return score, failure, time.monotonic() - started

        results = await asyncio.gather(*(one(name) for name in ATTEMPTS))
        return dict(zip(ATTEMPTS, results, strict=True))

    results = asyncio.run(main())
    for name, (score, failure, took) in results.items():
        print(f"{name:18} -> score {score}, failure {failure}, {took:.2f} s")
    assert {n: (s, f) for n, (s, f, _) in results.items()} == {n: (a[2], a[3]) for n, a in ATTEMPTS.items()}
    assert max(took for _, _, took in results.values()) < 3 + 1.0  # the wall deadline holds
    assert not ESCAPED.exists() and not Path("/usr/escaped").exists()  # nothing written outside its own temp dir
    time.sleep(0.5)
    if sandbox.as_root:
        assert running_sandbox_processes() == []  # every process of every slot is gone
    assert not [p for p in Path("/tmp").glob("rm-sandbox-*")]  # the programs' work folders are removed


def test_no_sandbox_means_no_code_unless_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to find
    with pytest.raises(SandboxUnavailable, match="RM_SANDBOX=limits-only"):
        Sandbox.detect(False, 1, Limits())
    accepted = Sandbox.detect(True, 1, Limits())
    assert accepted.mode == "limits-only"
    assert os.environ["PATH"] == "/nonexistent"


def test_a_program_that_ignores_its_input_or_floods_its_output_still_gets_an_answer(sandbox: Sandbox) -> None:
    """A program that is gone before its stdin is written (under uvloop the closed pipe raised RuntimeError: a 500
    under load) and one that prints without end (its output is capped, the service's memory is not its to take)."""

    async def busy_loop() -> None:  # a loaded service: the loop is late, the programs exit before it comes back
        for _ in range(10):
            await asyncio.sleep(0.01)
            time.sleep(0.05)

    box = Sandbox(sandbox.mode, 4, sandbox.limits)  # its slots' queue belongs to this test's event loop

    async def main() -> None:
        for stdin in ["", "x" * 100_000, ""]:
            runs = await asyncio.gather(*(box.run("print('done')", stdin=stdin) for _ in range(8)), busy_loop())
            assert [(r.returncode, r.stdout) for r in runs[:8]] == [(0, "done\n")] * 8
        flood = await box.run("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)")
        # Killed either at its wall deadline (None) or by its CPU-time limit first (it keeps a core busy while its
        # output is drained): which comes first depends on the machine's load, both end it.
        assert flood.returncode in (None, 128 + signal.SIGKILL, 128 + signal.SIGXCPU, -signal.SIGKILL), flood
        assert len(flood.stdout) <= 64 * 1024
        loud = await box.run("import sys\nsys.stdout.write('z' * (10 << 20))")
        assert loud.returncode == 0 and loud.stdout == "z" * (64 * 1024)

    import uvloop

    uvloop.run(main())


@pytest.mark.parametrize("mode", ["bwrap", "limits-only"])
def test_a_program_sees_none_of_the_services_secrets(
    sandbox: Sandbox, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's environment (RM_API_KEY, RM_ADMIN_API_KEY, cloud credentials) is not the program's: it starts
    with a minimal one, in either mode."""
    monkeypatch.setenv("RM_ADMIN_API_KEY", "admin-secret-123")
    box = Sandbox(mode, 1, sandbox.limits)  # type: ignore[arg-type]
    run = asyncio.run(box.run("import os\nprint(sorted(os.environ.items()))"))
    assert run.returncode == 0 and "admin-secret-123" not in run.stdout and "RM_" not in run.stdout, run.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start the service as another, unprivileged user")
def test_limits_only_programs_cannot_read_a_non_root_services_process() -> None:
    """Without namespaces and without root, a program shares the service's uid: /proc/<service>/environ (its API
    keys) must still be closed to it."""
    script = (
        "import asyncio, os\n"
        "from service.core.verifiers.sandbox import Limits, Sandbox\n"
        "os.environ['PATH'] = '/nonexistent'\n"  # no bwrap: limits-only, as accepted
        "box = Sandbox.detect(True, 1, Limits())\n"
        "program = 'import os\\ntry:\\n    print(open(f\"/proc/{os.getppid()}/environ\").read())\\n'"
        " 'except OSError as e:\\n    print(type(e).__name__)'\n"
        "print(asyncio.run(box.run(program)).stdout)\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RM_API_KEY": "service-secret-456"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert "service-secret-456" not in done.stdout and "PermissionError" in done.stdout, done.stdout
