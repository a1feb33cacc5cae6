"""Every malformed request gets a 4xx JSON error naming the problem, and the server keeps answering."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from servers import make_client

OK = {"items": [{"prompt": "p", "completion": "c"}]}
CASES = [
    ("/score", b"{not json", 422, "JSON decode error"),
    ("/score", b"\xff\xfe\xfa", 400, "UTF-8"),
    ("/score", b'{"items": [{"prompt": "\xff", "completion": "c"}]}', 400, "UTF-8"),
    ("/score", b'{"items": [{"prompt": "p", "completion": NaN}]}', 422, "items.0.completion"),
    ("/score", b'{"items": []}', 422, "items"),
    ("/score", b'{"items": [{"prompt": "p"}]}', 422, "items.0.completion"),
    ("/score", b'{"items": [{"prompt": 1, "completion": "c"}]}', 422, "items.0.prompt"),
    ("/score", b'{"items": [{"prompt": "p", "completion": ["c"]}]}', 422, "items.0.completion"),
    ("/score", b'{"items": [{"prompt": "p", "completion": "c"}], "normalize": "yes"}', 422, "normalize"),
    ("/score", b'{"items": [{"prompt": "p", "completion": "c", "extra": 1}]}', 422, "extra"),
    ("/score", b'{"items": "p"}', 422, "items"),
    ("/score", b"[]", 422, ""),
    ("/score", b'{"items": [{"prompt": "\\ud800", "completion": "c"}]}', 422, "surrogate"),
    ("/compare", b'{"prompt": "p", "completions": ["only one"]}', 422, "completions"),
    ("/compare", b'{"prompt": "p"}', 422, "completions"),
    ("/get_reward", b'{"query": [null]}', 422, "query.0"),
    ("/nope", b"{}", 404, ""),
    # Bounded while parsing, and said so (these were "not valid UTF-8 JSON" once).
    ("/score", b"[" * 10_000 + b"]" * 10_000, 422, "nested too deeply"),
    ("/score", b'{"items": [{"prompt": "p", "completion": "c"}], "normalize": ' + b"9" * 5000 + b"}", 422, "50 digits"),
    ("/score", b'{"items": [' + b"0," * 1_100_000 + b"0]}", 413, "JSON values"),
]


@pytest.mark.parametrize(("path", "body", "status", "needle"), CASES)
def test_bad_requests_get_json_4xx(client: TestClient, path: str, body: bytes, status: int, needle: str) -> None:
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()
    assert isinstance(error["error"], str) and error["type"]
    assert needle in response.text
    assert client.post("/score", json=OK).status_code == 200  # still answering


def test_wrong_method_is_json_405(client: TestClient) -> None:
    response = client.get("/score")
    assert response.status_code == 405 and response.json()["type"] == "method_not_allowed"


def test_limits_give_413_naming_the_field(tiny_bundle: Path) -> None:
    with make_client(
        tiny_bundle, max_items_per_request=4, max_chars_per_text=50, max_body_bytes=2048, max_queue_pairs=16
    ) as c:
        many = c.post("/score", json={"items": [{"prompt": "p", "completion": "c"}] * 5})
        assert many.status_code == 413 and "limit is 4" in many.json()["error"]
        long = c.post("/score", json={"items": [{"prompt": "p", "completion": "x" * 51}]})
        assert long.status_code == 413 and long.json()["field"] == "items.0.completion"
        compare = c.post("/compare", json={"prompt": "x" * 60, "completions": ["a", "b"]})
        assert compare.status_code == 413 and "prompt" in compare.json()["error"]
        body = c.post(
            "/score", content=b'{"items": [' + b" " * 4096 + b"]}", headers={"content-type": "application/json"}
        )
        assert body.status_code == 413 and body.json()["type"] == "too_large"

        def chunks():  # type: ignore[no-untyped-def]
            yield b'{"items": ['
            for _ in range(64):
                yield b" " * 100
            yield b"]}"

        streamed = c.post("/score", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["type"] == "too_large"
        assert c.post("/score", json=OK).status_code == 200
