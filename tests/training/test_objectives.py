"""One reward per objective: a real two-head fit, its bundle, and the service's answers with objectives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from builders import synthetic_records, write_records
from servers import LiveServer, make_client

from models.bundle import read_bundle
from models.runtime import BundleScorer
from service.client import RewardFunction
from training.data import DataError, load_objectives, objective_groups


def test_objective_groups_and_columns(tmp_path: Path) -> None:
    a = write_records(tmp_path / "a.jsonl", synthetic_records(4))
    b = write_records(tmp_path / "b.jsonl", [r | {"objective": "safe"} for r in synthetic_records(4, seed=1)])
    assert objective_groups(["helpful=x.jsonl", "y.jsonl", "safe=z.jsonl"]) == [
        ("helpful", "x.jsonl"),
        ("helpful", "y.jsonl"),
        ("safe", "z.jsonl"),
    ]
    pairs, names = load_objectives([str(b), f"helpful={a}"])  # b before any name=: its records' column decides
    assert names == ["safe", "helpful"] and {p.objective for p in pairs[len(pairs) - 4 :]} == {"helpful"}
    assert load_objectives([str(a)])[1] == []  # no names: one reward, as before
    with pytest.raises(DataError, match="some pairs have no objective"):
        load_objectives([str(a), str(b)])


def test_each_head_learns_its_own_data(two_heads: Path) -> None:
    bundle = read_bundle(two_heads)
    meta = bundle.meta
    assert meta.objectives == ["friendly", "blunt"] and meta.weights == {"friendly": 0.75, "blunt": 0.25}
    graph = onnx.load(str(two_heads / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["rewards"]
    matrix = meta.eval_metrics["fp32"]["objectives"]
    files = {Path(f).name: f for f in matrix["friendly"]["files"]}
    assert (
        matrix["friendly"]["files"][files["friendly.jsonl"]] >= 0.9 >= matrix["friendly"]["files"][files["blunt.jsonl"]]
    )
    assert matrix["blunt"]["files"][files["blunt.jsonl"]] >= 0.9 >= matrix["blunt"]["files"][files["friendly.jsonl"]]
    assert {name for name, _ in meta.reward_stats["fp32"].objectives} == {"friendly", "blunt"}
    assert "int8" in meta.precisions and meta.parity.int8["agreement"] >= 0.9  # the weaker head decides
    scorer = BundleScorer(bundle, "fp32", device="cpu")
    prompts, completions = ["Question 1: tea?", "q " * 30], ["tea is kind.", "tea is rude junk."]
    together = scorer.score(prompts, completions, max_batch_size=4)
    assert together.shape == (2, 2)
    assert np.max(np.abs(together[0] - scorer.score(prompts[:1], completions[:1])[0])) <= 1e-5  # batch-invariant
    assert np.array(meta.reference.rewards["fp32"]).shape == (12, 2)


def test_the_service_answers_per_objective(two_heads: Path) -> None:
    items = [{"prompt": "Question 1: tea?", "completion": c} for c in ("tea is kind.", "tea is rude junk.")]
    with make_client(two_heads, precision="fp32") as c:
        body = c.post("/score", json={"items": items}).json()
        heads = body["objectives"]
        assert set(heads) == {"friendly", "blunt"}
        combined = 0.75 * np.array(heads["friendly"]) + 0.25 * np.array(heads["blunt"])
        assert body["scores"] == pytest.approx(combined.tolist(), abs=1e-5)
        only_blunt = c.post("/score", json={"items": items, "weights": {"blunt": 1.0}}).json()["scores"]
        assert only_blunt == pytest.approx(heads["blunt"], abs=1e-6)
        unknown = c.post("/score", json={"items": items, "weights": {"helpful": 1.0}})
        assert unknown.status_code == 422 and "unknown objective" in unknown.json()["error"]
        stats = {n: m.to_dict() for n, m in read_bundle(two_heads).meta.reward_stats["fp32"].objectives}
        normal = c.post("/score", json={"items": items, "normalize": True}).json()["scores"]
        z = {n: (np.array(heads[n]) - stats[n]["mean"]) / stats[n]["std"] for n in heads}
        assert normal == pytest.approx((0.75 * z["friendly"] + 0.25 * z["blunt"]).tolist(), abs=1e-5)
        ranked = c.post(
            "/compare",
            json={
                "prompt": "Question 1: tea?",
                "completions": ["tea is kind.", "tea is rude junk."],
                "weights": {"blunt": 1.0},
            },
        ).json()
        assert ranked["ranking"] == [1, 0] and "objectives" in ranked  # the blunt head prefers the rude answer
        openrlhf = c.post("/get_reward", json={"query": ["\n\nHuman: tea?\n\nAssistant: tea is kind."]}).json()
        assert set(openrlhf["extra_logs"]) >= {"friendly", "blunt", "raw_reward"}
        schema = c.get("/openapi.json").json()["components"]["schemas"]["ScoreRequest"]["properties"]["weights"]
        assert {"propertyNames": {"enum": ["friendly", "blunt"]}}.items() <= schema["anyOf"][0].items()
        info = c.get("/info").json()
        assert info["objectives"] == ["friendly", "blunt"] and info["weights"] == {"friendly": 0.75, "blunt": 0.25}
        # Weights that would push the reward out of float range are refused (a 500 once: the answer was not JSON).
        for weights in ({"friendly": 1e308, "blunt": -1e308}, {"friendly": 2e6}):
            huge = c.post("/score", json={"items": items, "weights": weights})
            assert huge.status_code == 422 and huge.json()["error"].startswith("weights."), huge.text
        assert c.post("/score", json={"items": items, "weights": {"friendly": 1e6, "blunt": -1e6}}).status_code == 200


def test_trl_reward_function_can_reward_one_objective(two_heads: Path) -> None:
    server = LiveServer(two_heads, "--precision", "fp32")
    try:
        server.wait_ready()
        prompts, completions = ["Question 1: tea?"] * 2, ["tea is kind.", "tea is rude junk."]
        blunt = RewardFunction(server.url, name="blunt", objective="blunt")(prompts=prompts, completions=completions)
        friendly = RewardFunction(server.url, objective="friendly")(prompts=prompts, completions=completions)
        assert blunt[1] > blunt[0] and friendly[0] > friendly[1]
        with pytest.raises(ValueError, match="no objective 'kind'"):
            RewardFunction(server.url, objective="kind")(prompts=prompts, completions=completions)
    finally:
        server.stop()


def test_single_reward_answers_have_no_objectives(tiny_bundle: Path) -> None:
    with make_client(tiny_bundle, precision="fp32") as c:
        body = c.post("/score", json={"items": [{"prompt": "p", "completion": "c"}]}).json()
        assert set(body) == {"scores", "model", "truncated"}
        refused = c.post("/score", json={"items": [{"prompt": "p", "completion": "c"}], "weights": {"a": 1}})
        assert refused.status_code == 422
    meta: Any = json.loads((tiny_bundle / "reward_model.json").read_text())
    assert meta["objectives"] == [] and [o.name for o in onnx.load(str(tiny_bundle / "model.onnx")).graph.output] == [
        "reward"
    ]
