"""WorkerPool: verifier work in processes that can be killed. Each task has its own time limit, counted from when a
worker takes it, and the request's deadline; a worker that has not answered by the first of them is killed (SIGKILL: no
signal handler, thread or GIL can hold it) and replaced in the background. The answer is then "timeout" (the sample's
own limit: the same answer every time) or "over_budget" (the request's deadline came first, waiting included: it
depends on the load, so a client may retry). A worker that dies answers "error: worker died" and is replaced too.

Threads cannot bound this work: measured here, math-verify on `\\boxed{9^{9^{9^{9}}}}` in a worker thread froze the
whole Python process (a big-integer power holds the GIL), and math-verify's own SIGALRM timeouts only work on the main
thread. Only a process that can be killed bounds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("service.verifiers")
WORKER = "service.core.verifiers.worker"


@dataclass(frozen=True)
class Outcome:
    """One sample's result from one component: a value, or the failure that kept it from having one."""

    value: float | None
    failure: str | None = None  # None | "timeout" | "over_budget" | "no_answer" | "sandbox" | "error: ..."


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, task: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(task) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise EOFError("worker died")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class WorkerPool:
    """`size` worker processes; `run(task, deadline)` answers within the deadline, whatever the task does."""

    def __init__(self, size: int, memory_mb: int = 2048, on_kill: Callable[[], None] | None = None) -> None:
        self.size = size
        self.memory_mb = memory_mb
        self._on_kill = on_kill
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._spawning: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def busy(self) -> int:
        return len(self._workers) - self._idle.qsize()

    async def start(self) -> None:
        await asyncio.gather(*(self._spawn() for _ in range(self.size)))

    async def _spawn(self) -> None:
        # The worker limits its own memory (no preexec_fn: the service's threads make fork-then-Python unsafe).
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER,
            str(self.memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        worker = _Worker(proc)
        assert proc.stdout is not None
        ready = await proc.stdout.readline()  # the worker has imported math-verify (sympy) and is ready
        if not ready or self._closed:
            worker.kill()
            await proc.wait()
            if not self._closed:
                raise RuntimeError("a verifier worker failed to start")
            return
        self._workers.add(worker)
        self._idle.put_nowait(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.discard(worker)
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._respawn(worker))
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _respawn(self, dead: _Worker) -> None:
        await dead.proc.wait()  # reap it
        try:
            await self._spawn()
        except Exception:  # keep the pool smaller rather than crash the service; logged for the operator
            log.exception("could not replace a verifier worker")

    async def run(self, task: dict[str, Any], timeout: float, deadline: float) -> dict[str, Any] | Outcome:
        """The worker's answer; Outcome(None, "timeout") when it runs `timeout` seconds once a worker has it, or
        Outcome(None, "over_budget") when `deadline` (time.monotonic()) passes first, waiting for a worker included."""
        try:
            worker = await asyncio.wait_for(self._idle.get(), max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            return Outcome(None, "over_budget")
        own_limit = time.monotonic() + timeout
        try:
            answer = await asyncio.wait_for(worker.ask(task), max(min(own_limit, deadline) - time.monotonic(), 0.0))
        except TimeoutError:
            log.info("verifier worker %d killed at its deadline (%s task)", worker.proc.pid, task.get("kind"))
            if self._on_kill:
                self._on_kill()
            self._replace(worker)
            return Outcome(None, "timeout" if own_limit <= deadline else "over_budget")
        except (EOFError, ConnectionError, ValueError) as e:
            self._replace(worker)
            return Outcome(None, f"error: the verifier worker died ({type(e).__name__})")
        except BaseException:  # cancelled mid-task (the client left): its answer would come late, so start afresh
            self._replace(worker)
            raise
        self._idle.put_nowait(worker)
        return answer

    async def close(self) -> None:
        self._closed = True
        for worker in list(self._workers):
            worker.kill()
            with contextlib.suppress(Exception):
                await worker.proc.wait()
        self._workers.clear()
        for task in list(self._spawning):
            task.cancel()
