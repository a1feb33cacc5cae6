"""Session fixtures: tiny real backbones and one tiny real bundle, trained and exported by training.fit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
