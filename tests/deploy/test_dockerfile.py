"""The Dockerfile's targets (read as instructions: no Docker engine runs here): the default stays the serving image;
the collect image runs the annotation app as non-root behind tini, and its command and health check run for real."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from images import built_from, read_only_folder, running, stage, stages, venv_stage, wait_healthy


def test_the_default_target_is_the_serving_image() -> None:
    found = stages()
    assert found[-1].name is None and found[-1].parent == "serve" and not found[-1].steps
    names = [s.name for s in found if s.name]
    assert len(set(names)) == len(names)  # no stage named twice
    earlier: set[str] = set()
    for s in found:  # every parent is an earlier stage, the base image's ARG, or an image reference
        assert s.parent in earlier or s.parent.startswith("${") or ":" in s.parent, s
        earlier.add(s.name or "")


def test_the_collect_image() -> None:
    collect = stage("collect")
    assert collect.parent == "base"  # not the serving image: no bubblewrap, no model folder
    assert collect.exec_form("ENTRYPOINT") == ["tini", "--", "python", "-m", "collect"]
    assert stage("serve").exec_form("ENTRYPOINT")[:2] == ["tini", "--"]
    assert collect.exec_form("CMD") == ["serve", "--host", "0.0.0.0"]
    assert collect.args("EXPOSE") == ["8100"]
    [user] = collect.args("USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user)  # numeric and not root: Kubernetes' runAsNonRoot can verify it
    [install] = [r for r in collect.args("RUN") if "apt-get install" in r]
    assert "tini" in install.split() and "rm -rf /var/lib/apt/lists/*" in install
    assert "http://127.0.0.1:8100/healthz" in " ".join(collect.health_command())
    # Its virtual environment: the serve extra (never train, so no torch) and psycopg, with the collect package.
    build = venv_stage(collect)
    [run] = build.args("RUN")
    assert "deploy/install.sh /opt/venv serve " in run and "train" not in run and '"psycopg[binary]' in run
    assert "import collect.app, psycopg" in run  # the build fails if the app cannot import
    copied = {rest.split()[0] for s in built_from(build.name or "") for rest in s.args("COPY")}
    assert {"collect", "service", "models", "deploy/install.sh"} <= copied  # collect imports service.client


def test_the_collect_image_command_and_health_check_run(tmp_path: Path) -> None:
    """ENTRYPOINT (less tini) + CMD with this Python, configured only by the environment as the manifests do, from a
    working folder it cannot write; then the HEALTHCHECK passes and SIGTERM (what tini forwards) ends it."""
    from service.launch import free_port

    collect = stage("collect")
    port = free_port()
    command = [sys.executable, *collect.exec_form("ENTRYPOINT")[3:], *collect.exec_form("CMD")]
    command += ["--host", "127.0.0.1", "--port", str(port)]  # the image's 0.0.0.0:8100 as a free loopback port
    check = [sys.executable if w == "python" else w.replace(":8100/", f":{port}/") for w in collect.health_command()]
    assert check[1:] != collect.health_command()[1:]
    env = {
        **os.environ,
        "COLLECT_DATABASE_URL": str(tmp_path / "labels.sqlite"),
        "COLLECT_ADMIN_TOKEN": secrets.token_urlsafe(24),
    }
    log = tmp_path / "serve.log"
    with read_only_folder(tmp_path / "cwd") as cwd, running(command, env, cwd, log) as proc:
        wait_healthy(proc, port, log)
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
