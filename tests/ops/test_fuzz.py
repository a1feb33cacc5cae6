"""Property-based fuzzing: the HTTP API from its own OpenAPI schema, and the data loaders."""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import LiveServer

from training.data import DataError, load_pairs, pairs_from_record


@pytest.fixture(scope="module")
def api_server(tiny_bundle: Path) -> Iterator[LiveServer]:
    # With an admin key (sent by the fuzzer), /admin/reload is exercised too; without one it only ever answers 403.
    server = LiveServer(tiny_bundle, "--precision", "fp32", "--max-wait-ms", "1", "--admin-api-key", "adm")
    server.wait_ready()
    try:
        yield server
    finally:
        server.stop()


def test_api_keeps_its_published_contract(api_server: LiveServer) -> None:
    """`st run --checks all` against the live server's own OpenAPI schema: no 5xx, every status and response body
    as published, schema-valid bodies accepted and invalid ones refused (schemathesis' own CLI, all phases)."""
    st_cli = Path(sys.executable).with_name("st")
    cmd = [str(st_cli), "run", api_server.url + "/openapi.json", "--checks", "all", "--max-examples", "40"]
    cmd += ["--header", "Authorization: Bearer adm"]
    run = subprocess.run([*cmd, "--seed", "1", "--no-color"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert generated and generated.group(1) == generated.group(2) and int(generated.group(1)) >= 200, run.stdout


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=30) | st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", 3]), "content": st.text(max_size=10)}
    ),
    max_size=3,
)
records = st.dictionaries(
    st.sampled_from(["prompt", "question", "chosen", "rejected", "margin", "completions", "ranks"]),
    texts | json_values,
    max_size=6,
)


@given(records | json_values)
@settings(max_examples=400, deadline=None)
def test_any_record_becomes_pairs_or_a_data_error(record: Any) -> None:
    try:
        pairs = pairs_from_record(record, "fuzz")
    except DataError:
        return
    for p in pairs:
        assert p.chosen != p.rejected


@given(
    st.lists(st.binary(max_size=80) | records.map(lambda r: json.dumps(r).encode()), max_size=6),
    st.sampled_from([".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz"]),
    st.booleans(),
)
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_file_loads_or_raises_a_data_error(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], suffix: str, compress: bool
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"data{suffix}"
    body = b"\n".join(lines)
    path.write_bytes(gzip.compress(body) if suffix.endswith(".gz") and compress else body)
    for skip in (False, True):
        with contextlib.suppress(DataError):
            load_pairs([path], skip_invalid=skip)
