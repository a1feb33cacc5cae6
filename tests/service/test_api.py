"""Every endpoint of the real app (lifespan included) over the session's tiny real bundle."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from builders import rewrite_bundle
from fastapi.testclient import TestClient
from servers import make_client

from models.bundle import BundleError, read_bundle
from models.runtime import BundleScorer
from training.data import PreferencePair
from training.evaluate import score_pairs

PAIRS = [
    ("Question 1: tell me something about tea.", "tea is glad kind.", "tea is rude junk."),
    ("Question 2: tell me something about maps.", "maps is clear.", "maps is awful wrong useless."),
    ("Question 3: tell me something about chess.", "chess is sure great careful precise.", "chess is hate."),
]


def test_score_equals_training_evaluate(client: TestClient, tiny_bundle: Path) -> None:
    items = [{"prompt": p, "completion": c} for p, c, _ in PAIRS] + [
        {"prompt": p, "completion": r} for p, _, r in PAIRS
    ]
    response = client.post("/score", json={"items": items})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == read_bundle(tiny_bundle).meta.model_id and body["truncated"] == 0
    chosen, rejected, _ = score_pairs(
        BundleScorer(read_bundle(tiny_bundle), "fp32", device="cpu"), [PreferencePair(*t) for t in PAIRS]
    )
    assert body["scores"] == [float(x) for x in np.concatenate([chosen, rejected])]
    assert all(c > r for c, r in zip(chosen, rejected, strict=True))


def test_score_normalize_messages_and_empty_completion(client: TestClient, tiny_bundle: Path) -> None:
    raw = client.post("/score", json={"items": [{"prompt": "hi", "completion": ""}]}).json()["scores"][0]
    normalized = client.post("/score", json={"items": [{"prompt": "hi", "completion": ""}], "normalize": True})
    stats = read_bundle(tiny_bundle).meta.stats_for("fp32").overall
    mean, std = stats.mean, stats.std
    assert normalized.json()["scores"][0] == pytest.approx((raw - mean) / std, abs=1e-6)
    messages = {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}]}
    transcript = {"prompt": "\n\nHuman: hi\n\nAssistant:", "completion": " yo"}
    a = client.post("/score", json={"items": [messages]}).json()["scores"]
    b = client.post("/score", json={"items": [transcript]}).json()["scores"]
    assert a == b


def test_compare_ranks_with_bradley_terry_probabilities(client: TestClient) -> None:
    prompt, good, bad = PAIRS[0]
    body = client.post("/compare", json={"prompt": prompt, "completions": [bad, good, bad]}).json()
    s = body["scores"]
    assert body["ranking"][0] == 1 and body["ranking"][1:] == [0, 2]  # ties keep input order
    p = body["probabilities"]
    assert p[1][0] == pytest.approx(1 / (1 + math.exp(-(s[1] - s[0]))))
    assert p[0][1] == pytest.approx(1 - p[1][0]) and p[0][0] == 0.5


def test_get_reward_speaks_openrlhf(client: TestClient) -> None:
    prompt, good, bad = PAIRS[1]
    with_prompts = client.post(
        "/get_reward", json={"query": [prompt + good, prompt + bad], "prompts": [prompt] * 2, "labels": ["", ""]}
    ).json()
    direct = client.post(
        "/score", json={"items": [{"prompt": prompt, "completion": good}, {"prompt": prompt, "completion": bad}]}
    ).json()
    assert with_prompts["rewards"] == with_prompts["scores"] == direct["scores"]
    assert with_prompts["extra_logs"] == {"raw_reward": direct["scores"], "truncated": [0.0, 0.0]}
    transcript = "\n\nHuman: hi\n\nAssistant: hello"
    split = client.post("/get_reward", json={"query": [transcript]}).json()["rewards"]
    pair = client.post("/score", json={"items": [{"prompt": "\n\nHuman: hi\n\nAssistant:", "completion": " hello"}]})
    assert split == pair.json()["scores"]
    # Schema-valid bodies are answered: an empty batch (OpenRLHF 0.11.0 sends one to every URL after the first)
    # and fewer prompts than queries (the rest are split at their last assistant turn).
    empty = {"rewards": [], "scores": [], "extra_logs": {"raw_reward": [], "truncated": []}}
    assert client.post("/get_reward", json={"query": []}).json() == empty
    short = client.post("/get_reward", json={"query": [prompt + good, transcript], "prompts": [prompt]}).json()
    assert short["rewards"] == [direct["scores"][0], split[0]]
    # A query its prompt does not prefix (OpenRLHF cut the prompt's left) is scored whole, never refused.
    unprefixed = client.post("/get_reward", json={"query": ["abc"], "prompts": ["xyz"]}).json()["rewards"]
    assert unprefixed == client.post("/score", json={"items": [{"prompt": "", "completion": "abc"}]}).json()["scores"]


def test_probes_info_metrics_and_docs(client: TestClient, tiny_bundle: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == read_bundle(tiny_bundle).meta.model_id
    info = client.get("/info").json()
    assert info["precision"] == "fp32" and info["provider"] == "CPUExecutionProvider"
    assert info["max_length"] == 64 and info["batching"]["max_batch_size"] >= 1 and info["version"]
    client.post("/score", json={"items": [{"prompt": "x " * 200, "completion": "y"}]})
    metrics = client.get("/metrics").text
    for name in (
        "rm_requests_total",
        "rm_request_latency_seconds",
        "rm_tokenize_seconds",
        "rm_queue_wait_seconds",
        "rm_inference_seconds",
        "rm_batch_size",
        "rm_batch_tokens",
        "rm_padding_fraction",
        "rm_queue_depth",
        "rm_truncated_inputs_total",
        "rm_score_bucket",
        "rm_model_info",
    ):
        assert name in metrics, name
    assert 'rm_model_info{base_model="' in metrics and 'precision="fp32"' in metrics
    assert 'rm_requests_total{endpoint="/score",status="200"}' in metrics
    assert client.get("/openapi.json").json()["paths"]["/score"]
    assert client.get("/docs").status_code == 200


def test_truncation_is_reported(client: TestClient) -> None:
    body = client.post(
        "/score",
        json={
            "items": [{"prompt": "tea " * 500, "completion": "tea is kind."}, {"prompt": "short", "completion": "fine"}]
        },
    ).json()
    assert body["truncated"] == 1


def test_int8_precision_serves_the_int8_graph(tiny_bundle: Path) -> None:
    items = [{"prompt": p, "completion": g} for p, g, _ in PAIRS] + [
        {"prompt": p, "completion": b} for p, _, b in PAIRS
    ]
    offline = BundleScorer(read_bundle(tiny_bundle), "int8", device="cpu")
    want = offline.score([i["prompt"] for i in items], [i["completion"] for i in items]).tolist()
    with make_client(tiny_bundle, precision="int8") as c:
        info = c.get("/info").json()
        assert info["precision"] == "int8" and info["precision_reason"] == "int8: asked for"
        assert c.post("/score", json={"items": items}).json()["scores"] == want  # the int8 graph, exactly


def test_the_default_precision_is_what_the_bundle_measured(tiny_bundle: Path) -> None:
    from models.serving import MIN_INT8_SPEEDUP

    measured = read_bundle(tiny_bundle).meta.parity.int8_speedup
    expected = "int8" if measured >= MIN_INT8_SPEEDUP else "fp32"
    with make_client(tiny_bundle) as c:
        assert c.get("/info").json()["precision"] == expected


def test_every_precision_reproduces_its_reference_probes_at_load(tiny_bundle: Path) -> None:
    bundle = read_bundle(tiny_bundle)
    reference = bundle.meta.reference
    fp32_std = bundle.meta.reward_scale()
    for precision in ("fp32", "int8", "fp16"):
        with make_client(tiny_bundle, precision=precision) as c:
            check = c.get("/info").json()["reference_check"]
            assert check["ok"] and check["tokens_match"] and check["against"] == precision
            assert check["limit"] == pytest.approx(0.02 * fp32_std)
            items = [
                {"prompt": p, "completion": q} for p, q in zip(reference.prompts, reference.completions, strict=True)
            ]
            served = c.post("/score", json={"items": items}).json()["scores"]
            assert "rm_reference_max_abs_diff 0.0" in c.get("/metrics").text
        # Same machine, same files: the service reproduces the export's probe rewards exactly, fp16 included.
        assert served == reference.rewards[precision]
    from models.reference import check_reference

    near_constant = check_reference(BundleScorer(bundle, "fp32", device="cpu"), reference, std=1e-9)
    assert near_constant is not None and near_constant.ok and near_constant.limit == 1e-4  # rounding still passes
    fp16, fp32 = (np.array(reference.rewards[p]) for p in ("fp16", "fp32"))
    assert 0 < np.max(np.abs(fp16 - fp32)) <= bundle.meta.parity.fp16.limit  # a real fp16 graph, close


def test_a_drifted_reference_is_refused_or_served_with_a_warning(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:

    import models.serving

    ref = read_bundle(tiny_bundle).meta.reference

    def drifted(name: str, precision: str, shift: float) -> Path:
        rewards = dict(ref.rewards) | {precision: [r + shift for r in ref.rewards[precision]]}
        return rewrite_bundle(tiny_bundle, tmp_path / name, reference=dataclasses.replace(ref, rewards=rewards))

    int8_off = drifted("int8-off", "int8", 1.0)
    with (
        pytest.raises(BundleError, match="does not reproduce the exported scores"),
        make_client(int8_off, precision="int8"),
    ):
        pass  # strict (the default): the app does not start
    with make_client(int8_off, precision="int8", reference_check="warn") as c:
        check = c.get("/info").json()["reference_check"]
        assert not check["ok"] and check["max_abs_diff"] == pytest.approx(1.0, abs=1e-5)
        assert "rm_reference_max_abs_diff 1.0" in c.get("/metrics").text
    assert "does not reproduce the exported scores" in caplog.text
    with make_client(int8_off, precision="fp32") as c:  # the fp32 reference still holds
        assert c.get("/info").json()["reference_check"]["ok"]
    # fp16 chosen by default (as on a GPU) that misses its reference gives way to fp32; asked for, it is refused.
    monkeypatch.setattr(models.serving, "default_precision", lambda bundle, providers: ("fp16", "test"))
    fp16_off = drifted("fp16-off", "fp16", 1.0)
    with make_client(fp16_off) as c:
        info = c.get("/info").json()
        assert info["precision"] == "fp32" and info["reference_check"]["ok"]
    with pytest.raises(BundleError, match="fp16 probe rewards differ"), make_client(fp16_off, precision="fp16"):
        pass
    # Tokens that differ from the export's mean another tokenizer build: refused whatever the precision.
    retokenised = rewrite_bundle(
        tiny_bundle, tmp_path / "tokens", reference=dataclasses.replace(ref, ids_sha256="0" * 64)
    )
    with pytest.raises(BundleError, match="tokenise differently"), make_client(retokenised, precision="fp32"):
        pass


def test_api_key(tiny_bundle: Path) -> None:
    with make_client(tiny_bundle, api_key="s3cret") as c:
        item = {"items": [{"prompt": "p", "completion": "c"}]}
        missing = c.post("/score", json=item)
        assert missing.status_code == 401 and missing.json()["type"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert c.post("/score", json=item, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/score", json=item, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/compare", json={"prompt": "p", "completions": ["a", "b"]}).status_code == 401
        assert c.post("/get_reward", json={"query": ["a"]}).status_code == 401
        for probe in ("/healthz", "/readyz", "/metrics", "/info"):
            assert c.get(probe).status_code == 200, probe
        # Admin actions need their own key: with none configured they are off, even for the scoring key.
        disabled = c.post("/admin/reload", json={}, headers={"Authorization": "Bearer s3cret"})
        assert disabled.status_code == 403 and "RM_ADMIN_API_KEY" in disabled.json()["error"]
