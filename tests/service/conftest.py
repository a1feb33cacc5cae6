"""Service fixtures: the real app with its lifespan over the session's tiny bundle, and a live uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from servers import LiveServer, make_client


@pytest.fixture(scope="session")
def client(tiny_bundle: Path) -> Iterator[TestClient]:
    with make_client(tiny_bundle, precision="fp32", max_wait_ms=5) as c:
        yield c


@pytest.fixture(scope="session")
def live_server(tiny_bundle: Path) -> Iterator[LiveServer]:
    server = LiveServer(tiny_bundle, "--precision", "fp32")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
