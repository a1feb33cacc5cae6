"""Collect fixtures: tiny causal LMs, a live reward service over the session's tiny bundle, and the labels database
on each engine (`engine`: a SQLite file, or a fresh database on the session's own PostgreSQL server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import make_tiny_lm
from pg import Cluster, Unavailable
from servers import LiveServer

from collect import store

ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One PostgreSQL server for the session; a test that needs it skips, saying why, where it cannot start."""
    try:
        cluster = Cluster()
    except Unavailable as e:
        pytest.skip(f"PostgreSQL: {e}")
    try:
        yield cluster
    finally:
        store.close_idle()
        cluster.stop()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[store.Location]:
    """Where the test's labels database lives: a new SQLite file, or a new PostgreSQL database (its URL)."""
    if request.param == "sqlite":
        yield tmp_path / "labels.sqlite"
        return
    cluster: Cluster = request.getfixturevalue("postgres")
    yield cluster.create_database()
    store.close_idle()  # this test's database is not used again: its pooled connections would only pile up


@pytest.fixture(scope="session")
def tiny_gpt2_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-gpt2-lm"), "gpt2")


@pytest.fixture(scope="session")
def tiny_llama_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-llama-lm"), "llama")


@pytest.fixture(scope="session")
def reward_service(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # The tests fit new bundles into their own temporary folders: all of them lie under pytest's base folder.
    root = str(tmp_path_factory.getbasetemp())
    server = LiveServer(
        tiny_bundle,
        "--precision",
        "fp32",
        "--intra-op-threads",
        "1",
        "--admin-api-key",
        "reload-key",
        "--model-root",
        root,
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
