"""Collect fixtures: tiny causal LMs for generation and a live reward service over the session's tiny bundle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import make_tiny_lm
from servers import LiveServer


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
