"""Helpers to run the real app: in-process with its lifespan (TestClient), or as `python -m service` on loopback
(bench.servers, the launcher the benchmarks use too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bench.servers import Server, service
from service.app import create_app
from service.settings import Settings


def make_client(bundle: Path, **overrides: Any) -> TestClient:
    settings = Settings(model_dir=bundle, **overrides)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def LiveServer(bundle: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """`python -m service` on a free port with its output kept (a failed start says why); call wait_ready()."""
    return service(bundle, *args, env=env)
