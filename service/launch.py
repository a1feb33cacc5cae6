"""Server subprocesses on loopback: `python -m service` (or any server command) on a free port, started and waited
on until ready — what the benchmarks, the test suite and anyone scripting a local service use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on and this process has not handed out before.

    The kernel may give back a port it just gave us once its socket is closed; two servers started one after the
    other (before the first has bound) would then share a port, the loser would exit, and both URLs would reach the
    winner.
    """
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh loopback port after 100 tries")


class Server:
    """A server subprocess on a loopback port. `wait_ready(probe)` polls it until the probe answers 200.

    With `capture`, its output is kept so a start failure can say why; otherwise it is discarded (a long benchmark
    would fill the pipe).
    """

    def __init__(self, cmd: list[str], port: int, env: dict[str, str] | None = None, capture: bool = True) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        out = subprocess.PIPE if capture else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT if capture else None, text=True, env={**os.environ, **(env or {})}
        )
        self.name = " ".join(cmd[:4])

    def wait_ready(self, probe: str = "/readyz", timeout: float = 300) -> Server:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = self.proc.stdout.read() if self.proc.stdout else ""
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {output}")
            try:
                if httpx.get(self.url + probe, timeout=1).status_code == 200 and self.proc.poll() is None:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class ServiceServer(Server):
    """`python -m service --model-dir BUNDLE --port P ARGS…` on a free port, started (not yet waited on); no
    `--model-dir` when `bundle` is None (a verifier-only recipe)."""

    def __init__(
        self,
        bundle: str | os.PathLike[str] | None,
        *args: str,
        env: dict[str, str] | None = None,
        capture: bool = True,
    ) -> None:
        port = free_port()
        model = ["--model-dir", os.fspath(Path(bundle))] if bundle is not None else []
        cmd = [sys.executable, "-m", "service", *model, "--port", str(port), *args]
        super().__init__(cmd, port, env, capture)
