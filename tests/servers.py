"""Helpers to run the real app: in-process with its lifespan (TestClient), or as `python -m service` on loopback
(LiveServer: service.launch's launcher, the one the benchmarks use too; the `serve` fixture starts and stops one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from service.app import create_app
from service.core.settings import Settings
from service.launch import ServiceServer as LiveServer
from service.launch import free_port

__all__ = ["LiveServer", "free_port", "make_client"]


def make_client(bundle: Path, **overrides: Any) -> TestClient:
    settings = Settings(model_dir=bundle, **overrides)
    return TestClient(create_app(settings), raise_server_exceptions=False)
