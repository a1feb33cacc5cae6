"""Bundles for fault tests: a second real model (for reloads), real bundles whose runtime fails on one token (one of
them with two objectives, for the monitoring test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import BOOM, rewrite_bundle, tiny_fit_argv
from tokenizers import AddedToken, Tokenizer

from models.bundle import TOKENIZER_FILE, read_bundle


@pytest.fixture(scope="session")
def second_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, synthetic_data: Path) -> Path:
    """Another real fit (other seed, fewer epochs): different weights, so a reload visibly changes scores."""
    from training.fit import main

    out = tmp_path_factory.mktemp("bundles") / "tiny-v2"
    argv = tiny_fit_argv(tiny_bert, synthetic_data, out, epochs=2, seed=1, int8=False)
    assert main(argv) == 0
    return out


def with_boom(bundle: Path, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A copy of `bundle` whose tokenizer knows one token id past the model's embedding table: any text containing
    BOOM makes ONNX Runtime's Gather fail inside the batch — a real runtime fault, no mock."""
    src = read_bundle(bundle)
    work = tmp_path_factory.mktemp(f"{name}-src")
    tokenizer = Tokenizer.from_file(str(src.tokenizer_path))
    tokenizer.add_special_tokens([AddedToken(BOOM, special=True)])
    tokenizer.save(str(work / TOKENIZER_FILE))
    out = tmp_path_factory.mktemp("bundles") / name
    return rewrite_bundle(bundle, out, {TOKENIZER_FILE: work / TOKENIZER_FILE}, model_id=name)


@pytest.fixture(scope="session")
def faulty_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Path:
    """The session's tiny bundle, failing in the runtime on BOOM (with_boom)."""
    return with_boom(tiny_bundle, tmp_path_factory, "faulty")


@pytest.fixture(scope="session")
def monitored_bundle(tmp_path_factory: pytest.TempPathFactory, two_heads: Path) -> Path:
    """The two-objective bundle, failing in the runtime on BOOM: the monitoring test's load reaches every series."""
    return with_boom(two_heads, tmp_path_factory, "monitored")
