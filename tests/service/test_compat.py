"""vLLM- and TEI-shaped endpoints: their documented examples, shapes, defaults (σ), error dialects; our /score."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from servers import make_client

from models.bundle import read_bundle

TRANSCRIPT = "\n\nHuman: How do I boil an egg?\n\nAssistant: Simmer it for 9 minutes."
QUERY = "What is Deep Learning?"
DOCS = ["Deep Learning is not...", "Deep learning is...", "tea is glad kind."]
USAGE = {"prompt_tokens", "total_tokens", "completion_tokens", "completion_tokens_details"}


def raw(client: TestClient, pairs: list[tuple[Any, Any]]) -> list[float]:
    """Our own /score on the same pairs: the raw rewards."""
    items = [{"prompt": p, "completion": c} for p, c in pairs]
    response = client.post("/score", json={"items": items})
    assert response.status_code == 200, response.text
    return list(response.json()["scores"])


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def vllm_error(response: Any, status: int, error_type: str, message: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    assert error["type"] == error_type and message in error["message"], error


def tei_error(response: Any, status: int, error_type: str, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type and message in body["error"]


def test_tei_predict_follows_its_grammar_with_sigmoid_by_default(client: TestClient) -> None:
    [like, pair, transcript] = raw(
        client,
        [
            ("", "I like you."),
            ("q", "d"),
            ("\n\nHuman: How do I boil an egg?\n\nAssistant:", " Simmer it for 9 minutes."),
        ],
    )
    single = client.post("/predict", json={"inputs": "I like you."})  # the README example
    assert single.status_code == 200 and single.headers["content-type"] == "application/json"
    [prediction] = single.json()
    assert set(prediction) == {"score", "label"} and prediction["label"] == "LABEL_0"
    assert prediction["score"] == pytest.approx(sigmoid(like), rel=1e-12)
    assert client.post("/predict", json={"inputs": ["q", "d"]}).json()[0]["score"] == pytest.approx(sigmoid(pair))
    assert client.post("/predict", json={"inputs": TRANSCRIPT}).json()[0]["score"] == pytest.approx(sigmoid(transcript))
    batch = client.post("/predict", json={"inputs": [["I like you."], ["q", "d"]], "raw_scores": True}).json()
    print("TEI /predict:", single.json(), "raw_scores:", batch)
    assert batch == [[{"score": like, "label": "LABEL_0"}], [{"score": pair, "label": "LABEL_0"}]]  # raw: /score's
    assert (
        client.post("/predict", json={"inputs": ["I like you."], "unknown": 1}).json()[0]["score"]
        == single.json()[0]["score"]
    )  # ["a"] is one text; unknown fields are ignored, as serde does


def test_tei_rerank_documented_example_is_sorted(client: TestClient) -> None:
    rewards = raw(client, [(QUERY, d) for d in DOCS])
    body = {"query": QUERY, "texts": DOCS, "raw_scores": False}
    ranks = client.post("/rerank", json=body).json()
    assert [set(r) for r in ranks] == [{"index", "score"}] * 3  # a bare list; no text unless return_text
    assert [r["index"] for r in ranks] == sorted(range(3), key=lambda i: -rewards[i])
    assert [r["score"] for r in ranks] == pytest.approx([sigmoid(rewards[r["index"]]) for r in ranks])
    with_text = client.post("/rerank", json=body | {"raw_scores": True, "return_text": True}).json()
    assert with_text == [{"index": r["index"], "score": rewards[r["index"]], "text": DOCS[r["index"]]} for r in ranks]
    ties = client.post("/rerank", json={"query": QUERY, "texts": ["same", "same"]}).json()
    assert [r["index"] for r in ties] == [1, 0]  # TEI sorts ascending then reverses


def test_tei_errors_are_tei_shaped(client: TestClient) -> None:
    tei_error(client.post("/rerank", json={"query": "q", "texts": []}), 400, "Empty", "`texts` cannot be empty")
    tei_error(client.post("/predict", json={"inputs": ""}), 400, "Empty", "`inputs` cannot be empty")
    tei_error(client.post("/predict", json={"inputs": [["", ""]]}), 400, "Empty", "`inputs` cannot be empty")
    tei_error(client.post("/predict", json={"inputs": ["a", "b", "c"]}), 422, "Validation", "invalid length 3")
    tei_error(client.post("/predict", json={"input": "a"}), 422, "Validation", "inputs")
    tei_error(client.post("/rerank", json={"query": "q"}), 422, "Validation", "texts")
    tei_error(
        client.post("/predict", content=b"{", headers={"content-type": "application/json"}), 422, "Validation", ""
    )
    long = {"inputs": "tea " * 300}
    assert client.post("/predict", json=long).status_code == 200  # TEI >= 1.9 truncates by default
    tei_error(client.post("/predict", json=long | {"truncate": False}), 422, "Validation", "less than 64 tokens")
    tei_error(client.get("/predict"), 405, "MethodNotAllowed", "")


def test_vllm_pooling_docs_example_and_messages(client: TestClient, tiny_bundle: Path) -> None:
    prompts = ["I like you.", TRANSCRIPT]
    rewards = raw(
        client, [("", prompts[0]), ("\n\nHuman: How do I boil an egg?\n\nAssistant:", " Simmer it for 9 minutes.")]
    )
    response = client.post("/pooling", json={"model": "any-name", "input": prompts}, headers={"X-Request-Id": "abc"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "object", "created", "model", "data", "usage"} and body["id"] == "pooling-abc"
    print("vLLM /pooling:", body)
    assert body["object"] == "list" and body["model"] == read_bundle(tiny_bundle).meta.model_id
    assert isinstance(body["created"], int) and set(body["usage"]) == USAGE
    assert [d["index"] for d in body["data"]] == [0, 1] and {d["object"] for d in body["data"]} == {"pooling"}
    assert [d["data"] for d in body["data"]] == [[pytest.approx(sigmoid(r))] for r in rewards]
    off = client.post("/pooling", json={"input": prompts, "use_activation": False}).json()
    assert [d["data"] for d in off["data"]] == [[r] for r in rewards] and off["id"].startswith("pooling-")
    model = client.app.state.models.live  # type: ignore[attr-defined]
    encoded = model.scorer.encode(
        ["", "\n\nHuman: How do I boil an egg?\n\nAssistant:"], [prompts[0], " Simmer it for 9 minutes."]
    )
    assert off["usage"]["prompt_tokens"] == off["usage"]["total_tokens"] == sum(len(e) for e in encoded)
    messages = [
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Simmer it"}, {"type": "text", "text": "for 9."}]},
    ]
    chat = client.post("/pooling", json={"messages": messages, "use_activation": False}).json()
    want = raw(client, [(messages[:1], [{"role": "assistant", "content": "Simmer it\nfor 9."}])])
    assert [d["data"] for d in chat["data"]] == [want]


def test_vllm_score_shapes_pairing_and_our_score(client: TestClient) -> None:
    rewards = raw(client, [(QUERY, d) for d in DOCS])
    one_to_n = client.post("/v1/score", json={"queries": QUERY, "documents": DOCS, "use_activation": False})
    body = one_to_n.json()
    assert set(body) == {"id", "object", "created", "model", "data", "usage"} and body["id"].startswith("score-")
    assert body["data"] == [{"index": i, "object": "score", "score": r} for i, r in enumerate(rewards)]
    assert set(body["usage"]) == USAGE and body["usage"]["prompt_tokens"] > 0
    shapes = [
        {"queries": [QUERY] * 3, "documents": DOCS},
        {"queries": [QUERY], "items": DOCS},
        {"data_1": QUERY, "data_2": DOCS},
        {"text_1": [QUERY] * 3, "text_2": DOCS},
    ]
    for shape in shapes:
        for path in ("/score", "/v1/score"):  # /score routes vLLM's bodies on their shape
            scores = [d["score"] for d in client.post(path, json=shape).json()["data"]]
            assert scores == pytest.approx([sigmoid(r) for r in rewards]), (path, shape)
    one = client.post("/score", json={"text_1": QUERY, "text_2": DOCS[0]}).json()["data"]
    assert one == [{"index": 0, "object": "score", "score": pytest.approx(sigmoid(rewards[0]))}]
    ours = client.post("/score", json={"items": [{"prompt": QUERY, "completion": d} for d in DOCS]}).json()
    assert set(ours) == {"scores", "model", "truncated"} and ours["scores"] == rewards


def test_vllm_rerank_sorts_and_cuts_to_top_n(client: TestClient) -> None:
    rewards = raw(client, [(QUERY, d) for d in DOCS])
    best = sorted(range(3), key=lambda i: -rewards[i])
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        body = client.post(path, json={"model": "m", "query": QUERY, "documents": DOCS, "top_n": 2}).json()
        assert set(body) == {"id", "model", "usage", "results"} and body["id"].startswith("score-")
        assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
        assert body["results"] == [
            {
                "index": i,
                "document": {"text": DOCS[i], "multi_modal": None},
                "relevance_score": pytest.approx(sigmoid(rewards[i])),
            }
            for i in best[:2]
        ]
    every = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "use_activation": False}).json()
    assert [r["relevance_score"] for r in every["results"]] == [rewards[i] for i in best]  # top_n 0: all
    ties = client.post("/v1/rerank", json={"query": QUERY, "documents": ["same", "same"]}).json()
    assert [r["index"] for r in ties["results"]] == [0, 1]  # a stable sort, as vLLM's


def test_vllm_errors_are_vllm_shaped(client: TestClient) -> None:
    lengths = {"queries": ["a", "b"], "documents": ["c", "d", "e"]}
    for path in ("/score", "/v1/score"):
        vllm_error(
            client.post(path, json=lengths), 400, "BadRequestError", "Input lengths must be either 1:1, 1:N or N:N"
        )
    vllm_error(
        client.post("/v1/score", json={"queries": [], "documents": ["d"]}),
        400,
        "BadRequestError",
        "At least one text element",
    )
    vllm_error(
        client.post("/rerank", json={"query": "q", "documents": []}), 400, "BadRequestError", "text_pair element"
    )
    vllm_error(
        client.post("/pooling", json={"input": [[1, 2]]}), 400, "Bad Request", "token ids are not supported: send text"
    )
    vllm_error(
        client.post("/pooling", json={"input": "a", "normalize": True}), 400, "Bad Request", "use `use_activation`"
    )
    vllm_error(client.post("/pooling", json={"input": "a", "task": "embed"}), 400, "Bad Request", "Unsupported task")
    user_last = {"messages": [{"role": "user", "content": "hi"}]}
    vllm_error(client.post("/pooling", json=user_last), 400, "BadRequestError", "must be the assistant's")
    image = {"messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    vllm_error(client.post("/pooling", json=image), 400, "Bad Request", "'image_url' content part")
    missing = client.post("/v1/score", json={"queries": "q"})
    vllm_error(missing, 400, "Bad Request", "validation error")
    assert missing.json()["error"]["param"] == "documents"
    long = {"input": "tea " * 300}
    vllm_error(client.post("/pooling", json=long), 400, "BadRequestError", "maximum context length is 64 tokens")
    assert client.post("/pooling", json=long | {"truncate_prompt_tokens": -1}).status_code == 200
    vllm_error(client.post("/pooling", json=long | {"truncate_prompt_tokens": 8}), 400, "Bad Request", "not supported")
    vllm_error(client.get("/pooling"), 405, "Method Not Allowed", "")
    ours = client.post("/score", json={"items": []})  # our shape keeps our errors
    assert ours.status_code == 422 and ours.json()["type"] == "invalid_request"


def test_auth_and_limits_answer_in_each_dialect(tiny_bundle: Path) -> None:
    with make_client(tiny_bundle, precision="fp32", api_key="k", max_items_per_request=2, max_body_bytes=2048) as c:
        vllm_error(c.post("/pooling", json={"input": "a"}), 401, "Unauthorized", "API key")
        vllm_error(c.post("/score", json={"text_1": "a", "text_2": "b"}), 401, "Unauthorized", "API key")
        tei_error(c.post("/rerank", json={"query": "a", "texts": ["b"]}), 401, "Unauthorized", "API key")
        vllm_error(c.post("/rerank", json={"query": "a", "documents": ["b"]}), 401, "Unauthorized", "API key")
        ours = c.post("/score", json={"items": [{"prompt": "a", "completion": "b"}]})
        assert ours.status_code == 401 and ours.json()["type"] == "unauthorized"
        key = {"Authorization": "Bearer k"}
        three = ["a", "b", "c"]
        tei_error(
            c.post("/predict", json={"inputs": [[t] for t in three]}, headers=key), 422, "Validation", "limit is 2"
        )
        vllm_error(
            c.post("/v1/score", json={"text_1": "q", "text_2": three}, headers=key),
            400,
            "BadRequestError",
            "limit is 2",
        )
        big = {"inputs": "x" * 4096}
        tei_error(c.post("/predict", json=big, headers=key), 422, "Validation", "over the limit")
        vllm_error(
            c.post("/pooling", json={"input": "x" * 4096}, headers=key), 400, "BadRequestError", "over the limit"
        )
        assert (
            c.post("/score", json={"items": [{"prompt": "x" * 4096, "completion": ""}]}, headers=key).status_code == 413
        )


def test_openapi_shows_both_shapes_on_shared_paths(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, n in (("/score", 2), ("/rerank", 2), ("/v1/score", 4), ("/pooling", 2)):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert len(schema["oneOf"]) == n, path
    assert "routed on the body's shape" in paths["/score"]["post"]["description"]
    assert {"400", "401", "422", "424", "429", "503"} <= set(paths["/predict"]["post"]["responses"])
