"""Session fixtures: tiny real backbones and one tiny real bundle, trained and exported by training.fit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

from builders import make_tiny_bert, make_tiny_decoder, synthetic_records, tiny_fit_argv, write_records

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "preferences"


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from training.model import default_base

    return default_base()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm_path)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_decoder(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_decoder(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_records(tmp_path_factory.mktemp("data") / "synthetic.jsonl", synthetic_records(240))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, synthetic_data: Path) -> Path:
    """A real bundle: tiny BERT fitted on separable synthetic pairs, exported fp32 + int8, parity-checked."""
    from training.fit import main

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    argv = tiny_fit_argv(tiny_bert, synthetic_data, out)
    assert main(argv) == 0
    return out


@pytest.fixture(scope="session")
def two_heads(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    """A real bundle with two objectives that disagree on every pair: `friendly` prefers the kind answer, `blunt` the
    other one (session-wide: the objectives' tests and the monitoring test both serve it)."""
    from training.fit import main

    folder = tmp_path_factory.mktemp("objectives")
    records = synthetic_records(240)
    friendly = write_records(folder / "friendly.jsonl", records[:120])
    blunt = write_records(
        folder / "blunt.jsonl", [r | {"chosen": r["rejected"], "rejected": r["chosen"]} for r in records[120:]]
    )
    out = folder / "bundle"
    argv = tiny_fit_argv(tiny_bert, friendly, out, min_int8_agreement=0.9, objective_weights="friendly=0.75,blunt=0.25")
    data = argv.index("--data")
    argv[data + 1 : data + 2] = [f"friendly={friendly}", f"blunt={blunt}"]
    assert main(argv) == 0
    return out


@pytest.fixture
def serve() -> Iterator[Callable[..., Any]]:
    """`serve(bundle, *flags, **RM_env)`: a live `python -m service` on loopback, ready, and stopped when the test
    ends whatever happens (a test may stop it itself first, to read its output or exit status)."""
    from servers import LiveServer

    started: list[Any] = []

    def start(bundle: Path | None, *args: str, **env: str) -> Any:
        server = LiveServer(bundle, *args, env={**os.environ, **env})
        started.append(server)
        return server.wait_ready()

    try:
        yield start
    finally:
        for server in started:
            server.stop()
