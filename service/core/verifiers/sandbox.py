"""Sandbox: untrusted programs (a policy's code) run in bubblewrap — their own network, pid, ipc and uts namespaces (no
network at all), a read-only /usr and a private size-limited /tmp and nothing else of the host's files — under
limits on CPU time, memory, processes and file size (prlimit), as an unprivileged user of their own (setpriv, one uid
per concurrent slot, when the service runs as root), with a wall deadline; at the end the whole process group, and
every process of the slot's uid, is killed.

Where no namespaces can be created, nothing runs unless the operator accepts limits-only execution (RM_SANDBOX=
limits-only): then the limits and the deadline still apply, but the program sees the host's files and network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Mode = Literal["bwrap", "limits-only"]
FIRST_UID = 60000  # slot i runs as uid FIRST_UID + i when the service is root


class SandboxUnavailable(RuntimeError):
    """No sandbox can be made on this machine (and limits-only execution was not accepted)."""


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 5.0
    cpu_seconds: int = 5
    memory_mb: int = 512
    processes: int = 32
    file_mb: int = 16
    tmp_mb: int = 64


@dataclass(frozen=True)
class Run:
    returncode: int | None  # None: killed at the wall deadline
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def _environment() -> dict[str, str]:
    """The program's whole environment: none of the service's (API keys, cloud credentials), a PATH that finds the
    sandbox's own tools."""
    tools = [shutil.which(tool) for tool in ("prlimit", "setpriv", "bwrap")]
    folders = dict.fromkeys([os.path.dirname(t) for t in tools if t] + ["/usr/bin", "/bin"])
    return {"PATH": ":".join(folders), "HOME": "/tmp", "LANG": "C.UTF-8"}


def _hide_own_process() -> None:
    """Limits-only programs run as the service's own uid when it is not root, and could read its environment and
    memory through /proc/<pid>; a non-dumpable process's /proc files belong to root instead."""
    if os.geteuid() == 0 or not sys.platform.startswith("linux"):
        return  # as root each program has a uid of its own, which cannot read root's /proc files anyway
    import ctypes

    pr_set_dumpable = 4
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)


def _python() -> str:
    """An interpreter every uid can run (the service's own may live under /root)."""
    for candidate in (os.path.realpath(sys.executable), "/usr/local/bin/python3", "/usr/bin/python3"):
        if candidate.startswith("/usr/") and os.access(candidate, os.X_OK):
            return candidate
    return os.path.realpath(sys.executable)


class Sandbox:
    def __init__(self, mode: Mode, slots: int, limits: Limits) -> None:
        self.mode = mode
        self.limits = limits
        self.python = _python()
        self.as_root = os.geteuid() == 0
        self.environment = _environment()
        self._slots: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(slots):
            self._slots.put_nowait(slot)

    def with_limits(self, limits: Limits) -> Sandbox:
        """The same sandbox and slots (one uid per concurrent program, whoever runs it) under other limits."""
        other = Sandbox(self.mode, 0, limits)
        other._slots = self._slots
        return other

    @classmethod
    def detect(cls, accept_limits_only: bool, slots: int, limits: Limits) -> Sandbox:
        """A bwrap sandbox if this machine can make one (probed by running one), else limits-only if accepted."""
        probe = cls("bwrap", 1, limits)
        problem = probe.probe()
        if not problem:
            return cls("bwrap", slots, limits)
        if accept_limits_only:
            _hide_own_process()
            return cls("limits-only", slots, limits)
        raise SandboxUnavailable(
            f"no sandbox for code verifiers here ({problem}); install bubblewrap and allow user namespaces, or set "
            "RM_SANDBOX=limits-only to run policy code with resource limits only (it then sees this machine's files "
            "and network)"
        )

    def probe(self) -> str:
        """'' if a sandboxed program runs here, else why not."""
        if shutil.which("bwrap") is None:
            return "bubblewrap (bwrap) is not installed"
        try:
            command = self._command(0, ["-c", "print(1)"], None)
            done = subprocess.run(command, capture_output=True, timeout=20, env=self.environment)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bwrap failed: {e}"
        if done.returncode != 0 or done.stdout.strip() != b"1":
            return f"bwrap failed: {done.stderr.decode(errors='replace').strip()[:200]}"
        return ""

    def _command(self, slot: int, args: list[str], work: Path | None) -> list[str]:
        lim = self.limits
        nproc = lim.processes if self.as_root else _own_tasks() + lim.processes  # RLIMIT_NPROC counts the uid's tasks
        cmd = [
            "prlimit",
            f"--cpu={lim.cpu_seconds}",
            f"--as={lim.memory_mb << 20}",
            f"--nproc={nproc}",
            f"--fsize={lim.file_mb << 20}",
            "--core=0",
            "--",
        ]
        if (
            self.as_root
        ):  # an unprivileged uid of its own per slot: process limits apply, and its processes can be swept
            uid = str(FIRST_UID + slot)
            cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
        if self.mode == "bwrap":
            cmd += ["bwrap", "--ro-bind", "/usr", "/usr"]
            cmd += ["--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin"]
            cmd += ["--dev", "/dev", "--proc", "/proc", "--size", str(lim.tmp_mb << 20), "--tmpfs", "/tmp"]
            if work is not None:
                cmd += ["--ro-bind", str(work), "/sandbox"]
            cmd += ["--unshare-all", "--die-with-parent", "--new-session", "--chdir", "/tmp"]
            cmd += ["--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin:/bin", "--"]
        return [*cmd, self.python, "-I", "-S", *args]

    async def run(self, program: str, stdin: str = "") -> Run:
        """Run a Python program (stdin given) in a free slot; its stdout/stderr, or a timeout at the wall deadline."""
        slot = await self._slots.get()
        work = Path(tempfile.mkdtemp(prefix="rm-sandbox-"))
        try:
            work.chmod(0o755)  # the sandbox's own uid reads the program, nothing else
            (work / "program.py").write_text(program, encoding="utf-8")
            (work / "program.py").chmod(0o644)
            if self.mode == "bwrap":
                argv = self._command(slot, ["/sandbox/program.py"], work)
            else:
                argv = self._command(slot, [str(work / "program.py")], None)
            return await self._run(argv, stdin, slot, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            self._slots.put_nowait(slot)

    async def _run(self, argv: list[str], stdin: str, slot: int, work: Path) -> Run:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(work),
            env=self.environment,
            start_new_session=True,  # its own process group, killed whole at the end
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            _, out, err, returncode = await asyncio.wait_for(
                asyncio.gather(_feed(proc, stdin), _keep(proc.stdout), _keep(proc.stderr), proc.wait()),
                self.limits.wall_seconds,
            )
        except TimeoutError:
            out, err, returncode = b"", b"", None
        finally:
            await self._sweep(proc, slot)
        return Run(returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    async def _sweep(self, proc: asyncio.subprocess.Process, slot: int) -> None:
        """Kill the process group and, as root, every process of the slot's uid (a fork that escaped the group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self.as_root:
            uid = str(FIRST_UID + slot)
            sweeper = await asyncio.create_subprocess_exec(
                "setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--",
                "kill",
                "-KILL",
                "-1",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await sweeper.wait()
        with contextlib.suppress(Exception):
            await proc.wait()


OUTPUT_CAP = 64 * 1024  # what comes back is bounded: a program printing without end costs no memory


async def _feed(proc: asyncio.subprocess.Process, data: str) -> None:
    """Write the program's stdin; a program that exits or closes it first simply did not read it (uvloop says so with
    RuntimeError, asyncio with BrokenPipeError)."""
    if proc.stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
        proc.stdin.write(data.encode())
        await proc.stdin.drain()
    with contextlib.suppress(Exception):
        proc.stdin.close()


async def _keep(stream: asyncio.StreamReader) -> bytes:
    """The first OUTPUT_CAP bytes of a stream, the rest read and dropped (the program never blocks on a full pipe)."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < OUTPUT_CAP:
            kept += chunk[: OUTPUT_CAP - len(kept)]
    return bytes(kept)


def _own_tasks() -> int:
    """Tasks (threads) the service's uid has now: RLIMIT_NPROC is checked against that count."""
    uid = os.getuid()
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
    return count
