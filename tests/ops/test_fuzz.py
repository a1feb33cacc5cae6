"""Property-based fuzzing: the HTTP API from its own OpenAPI schema, and the data loaders."""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from servers import LiveServer

from training.data import DataError, load_pairs, pairs_from_record


@pytest.fixture(scope="module")
def api_schema(tiny_bundle: Path) -> Iterator[Any]:
    server = LiveServer(tiny_bundle, "--precision", "fp32", "--max-wait-ms", "1")
    server.wait_ready()
    try:
        yield schemathesis.openapi.from_url(server.url + "/openapi.json")
    finally:
        server.stop()


# Hypothesis is driven directly per operation rather than through schemathesis' pytest plugin,
# which breaks whenever pytest changes its node internals.
def test_api_never_answers_5xx(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    cases = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            nonlocal cases
            cases += 1
            case.call_and_validate(checks=[not_a_server_error])

        check()
    print(f"fuzzed {cases} generated requests over {len(operations)} operations")
    assert cases >= 100


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
