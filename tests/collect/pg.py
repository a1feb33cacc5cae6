"""A throwaway PostgreSQL server for the tests: Debian's binaries, initdb in a temporary folder, a database per test.

Started once per session (initdb and start take a second or two; CREATE DATABASE takes milliseconds). As root the
server runs as the `postgres` user (or `nobody`): PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from servers import free_port

PR_SET_PDEATHSIG = 1


class Unavailable(RuntimeError):
    """Why no PostgreSQL server can be started here; the tests that need one skip with this reason."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        raise Unavailable("no PostgreSQL server binaries (initdb): apt-get install postgresql (.ci/run does)")
    return Path(initdb).parent


def _as_user() -> dict[str, Any]:
    """Popen arguments that run the server as ourselves, or as an unprivileged user when we are root, and stop it
    (fast shutdown) if this process dies without stopping it: no server outlives a killed test run."""

    def die_with_parent() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)

    found: dict[str, Any] = {"preexec_fn": die_with_parent if sys.platform == "linux" else None}
    if os.geteuid() != 0:
        return found
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return {**found, "user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    raise Unavailable("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")


class Cluster:
    """A private server on 127.0.0.1 (trust authentication, fsync and synchronous commit as in production)."""

    def __init__(self) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise Unavailable("psycopg is not installed (pip install -e '.[dev]')") from None
        self.bindir = _bindir()
        self.as_user = _as_user()
        uid, gid = self.as_user.get("user", os.getuid()), self.as_user.get("group", os.getgid())
        # Not under pytest's base folder: that one is 0700 root, and the server's user must reach its files.
        self.root = Path(tempfile.mkdtemp(prefix="collect-pg-"))
        self.data = self.root / "data"
        self.data.mkdir()
        for path in (self.root, self.data):
            os.chown(path, uid, gid)
        self.data.chmod(0o700)
        self.root.chmod(0o755)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.names = itertools.count()
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        init = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "collect", "-A", "trust", "-E", "UTF8"]
        result = subprocess.run(
            [*init, "--locale=C", "--no-sync"], capture_output=True, text=True, env=env, cwd=self.root, **self.as_user
        )
        if result.returncode != 0:
            self.stop()
            raise Unavailable(f"initdb failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
        for _ in range(3):  # a port found free may be taken before the server binds it: try another
            if self._start(env):
                return
        self.stop()
        raise Unavailable(f"PostgreSQL did not start: {self.log()[-500:]}")

    def _start(self, env: dict[str, str]) -> bool:
        self.port = free_port()
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root)]
        cmd += ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "logging_collector=off"]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the server writes it for its whole life)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root, **self.as_user)
        log.close()
        import psycopg

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        return False

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database: str) -> str:
        return f"postgresql://collect@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"test_{next(self.names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: roll back, disconnect everyone, checkpoint
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
