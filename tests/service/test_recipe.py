"""Reward recipes in the service: errors that name the line and field, every component reported beside the combined
reward, a verifier-only service, hangs answered at their deadline while other requests go on, recipe reloads, and
verifier work admitted against the queue's time limit."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import make_client

from service.core.components import specs
from service.core.recipe import RecipeError, load_recipe

RECIPE = """\
components:
  - kind: model
    weight: 1.0
  - kind: math
    weight: 2.0
    timeout: 1.5
  - kind: format
    weight: 0.5
    pattern: '.*\\\\boxed\\{.*\\}.*'
  - kind: length
    unit: chars
    max: 40
    buffer: 20
  - kind: repetition
    n: 2
budget_seconds: 20
"""
MATH_ONLY = """\
components:
  - kind: math
    on_failure: null
    timeout: 1.5
"""
HANG = "\\boxed{9^{9^{9^{9}}}}"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_recipe_errors_name_the_line_and_the_field(tmp_path: Path) -> None:
    cases = {
        "kind.yaml": ("components:\n  - kind: model\n  - kind: telepathy\n", r":3: components\.1\.kind: unknown kind"),
        "weight.yaml": ("components:\n  - kind: model\n    weight: heavy\n", r":3: components\.0\.weight:"),
        "option.yaml": ("components:\n  - kind: math\n    extrct: boxed\n", r":3: components\.0\.extrct: Extra inputs"),
        "regex.yaml": ("components:\n  - kind: format\n    pattern: '('\n", r":3: components\.0\.pattern:"),
        "empty.yaml": ("components: []\n", r"components: List should have at least 1 item"),
        "twice.yaml": ("components:\n  - kind: math\n  - kind: math\n", "names must be distinct"),
        "bad.toml": ("[[components]]\nkind = 'math'\ntimeout = -1\n", r"components\.0\.timeout:"),
        "syntax.yaml": ("components: [\n", "not valid YAML"),
    }
    for name, (text, message) in cases.items():
        with pytest.raises(RecipeError, match=message):
            load_recipe(write(tmp_path, name, text), specs())
    ok = load_recipe(write(tmp_path, "ok.toml", "[[components]]\nkind = 'math'\nextract = 'answer_tag'\n"), specs())
    assert [c.label for c in ok.components] == ["math"] and not ok.needs_model
    # The service refuses a bad recipe with one line before it binds a port.
    started = subprocess.run(
        [sys.executable, "-m", "service", "--reward-recipe", str(tmp_path / "kind.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 2 and started.stderr.count("\n") == 1 and ":3: components.1.kind" in started.stderr


def test_every_component_is_reported_beside_the_combined_reward(tiny_bundle: Path, tmp_path: Path) -> None:
    recipe = write(tmp_path, "recipe.yaml", RECIPE)
    items = [
        {"prompt": "1+1?", "completion": "It is \\boxed{2}", "reference": "2"},
        {"prompt": "1+1?", "completion": "It is \\boxed{3}", "reference": "2"},
        {"prompt": "1+1?", "completion": "no idea no idea no idea no idea no idea", "reference": "2"},
        {"prompt": "1+1?", "completion": "It is \\boxed{2}"},  # no reference: math fails with no_answer
    ]
    with make_client(tiny_bundle, precision="fp32", reward_recipe=recipe) as c:
        answer = c.post("/score", json={"items": items}).json()
        model = c.post(
            "/score", json={"items": [{"prompt": i["prompt"], "completion": i["completion"]} for i in items]}
        )
        info = c.get("/info").json()["reward_recipe"]
    parts, failures = answer["components"], answer["failures"]
    assert parts["math"] == [1.0, 0.0, 0.0, 0.0] and failures["math"] == [None, None, "no_answer", "no_answer"]
    assert parts["format"] == [1.0, 1.0, 0.0, 1.0]
    assert parts["length"] == [0.0, 0.0, pytest.approx(-0.95), 0.0]  # 39 chars: 19 past max - buffer
    assert parts["repetition"] == [0.0, 0.0, pytest.approx(2 / 9 - 1), 0.0]  # 2 distinct 2-grams of 9
    weights = {"model": 1.0, "math": 2.0, "format": 0.5, "length": 1.0, "repetition": 1.0}
    for i, score in enumerate(answer["scores"]):
        assert score == pytest.approx(sum(w * parts[name][i] for name, w in weights.items()), abs=1e-6)
    assert parts["model"] == pytest.approx(model.json()["components"]["model"], abs=1e-6)
    assert [c["kind"] for c in info["components"]] == list(weights) and info["verifier_workers"] == 2


def test_a_failure_with_null_on_failure_makes_the_reward_null_and_a_verifier_only_service_needs_no_bundle(
    tmp_path: Path, serve: Any
) -> None:
    recipe = write(tmp_path, "math.yaml", MATH_ONLY)
    server = serve(None, "--reward-recipe", str(recipe))  # no bundle at all
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready", "model": None}
    items = [{"prompt": "q", "completion": "\\boxed{4}", "reference": "4"}, {"prompt": "q", "completion": "none"}]
    answer = httpx.post(server.url + "/score", json={"items": items}, timeout=30).json()
    assert answer["scores"] == [1.0, None] and answer["model"] is None and answer["failures"]["math"][1] == "no_answer"
    pooling = httpx.post(server.url + "/pooling", json={"input": "a"}, timeout=30)
    assert pooling.status_code == 503  # model-only endpoints need a model
    assert httpx.get(server.url + "/info").json()["reward_recipe"]["components"][0]["kind"] == "math"


def test_a_hanging_answer_is_answered_at_its_deadline_while_other_requests_go_on(
    tiny_bundle: Path, tmp_path: Path, serve: Any
) -> None:
    recipe = write(tmp_path, "recipe.yaml", RECIPE)
    server = serve(tiny_bundle, "--precision", "fp32", "--reward-recipe", str(recipe))

    async def main() -> tuple[float, dict[str, Any], list[float]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            started = time.monotonic()
            hang = asyncio.ensure_future(
                http.post("/score", json={"items": [{"prompt": "q", "completion": HANG, "reference": "1"}]})
            )
            latencies = []
            while not hang.done():
                t = time.monotonic()
                item = {"prompt": "1+1?", "completion": f"\\boxed{{{len(latencies)}}}", "reference": "2"}
                r = await http.post("/score", json={"items": [item]})
                assert r.status_code == 200
                latencies.append(time.monotonic() - t)
            answer = (await hang).json()
            return time.monotonic() - started, answer, sorted(latencies)

    took, answer, latencies = asyncio.run(main())
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(f"hang answered in {took:.2f} s (deadline 1.5 s); {len(latencies)} other requests meanwhile, p99 {p99:.3f} s")
    assert answer["failures"]["math"] == ["timeout"] and took <= 1.5 + 0.5
    assert len(latencies) >= 5 and p99 < 0.5


def test_a_recipe_reload_swaps_the_recipe_and_a_bad_one_is_refused(
    tiny_bundle: Path, tmp_path: Path, serve: Any
) -> None:
    first = write(tmp_path, "first.yaml", "components:\n  - kind: model\n")
    second = write(tmp_path, "second.yaml", "components:\n  - kind: model\n  - kind: repetition\n    weight: 2\n")
    write(tmp_path, "broken.yaml", "components:\n  - kind: nope\n")
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    server = serve(bundle, "--precision", "fp32", "--reward-recipe", str(first), "--admin-api-key", "adm")
    admin = {"Authorization": "Bearer adm"}
    item = {"items": [{"prompt": "q", "completion": "same same same same"}]}
    assert set(httpx.post(server.url + "/score", json=item).json()["components"]) == {"model"}
    swapped = httpx.post(server.url + "/admin/reload", json={"reward_recipe": "second.yaml"}, headers=admin)
    assert swapped.status_code == 200 and swapped.json()["reward_recipe"] == str(second.resolve())
    assert swapped.json()["model_id"] == swapped.json()["previous_model_id"]  # the model stayed
    assert set(httpx.post(server.url + "/score", json=item).json()["components"]) == {"model", "repetition"}
    refused = httpx.post(server.url + "/admin/reload", json={"reward_recipe": "broken.yaml"}, headers=admin)
    assert refused.status_code == 422 and "unknown kind" in refused.json()["error"]
    assert set(httpx.post(server.url + "/score", json=item).json()["components"]) == {"model", "repetition"}


def test_verifier_work_is_admitted_against_the_time_limit(tmp_path: Path, serve: Any) -> None:
    recipe = write(tmp_path, "math.yaml", MATH_ONLY)
    server = serve(None, "--reward-recipe", str(recipe), "--max-queue-seconds", "0.2")
    hangs = {"items": [{"prompt": "q", "completion": HANG, "reference": "1"}] * 8}

    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            first = asyncio.ensure_future(http.post("/score", json=hangs))
            await asyncio.sleep(0.3)  # admitted: the queue was empty
            second = await http.post("/score", json={"items": [{"prompt": "q", "completion": "\\boxed{1}"}]})
            return await first, second

    first, second = asyncio.run(main())
    failures = set(first.json()["failures"]["math"])
    assert first.status_code == 200 and "timeout" in failures and failures <= {"timeout", "over_budget"}
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
    assert "verifiers" in second.json()["error"]


def test_a_verl_compute_score_returns_the_services_numbers(tiny_bundle: Path, tmp_path: Path, serve: Any) -> None:
    """verl's `compute_score(data_source, solution_str, ground_truth, extra_info)`: the combined reward as `score`
    and each component beside it, the very numbers /score gives."""
    import pickle

    from service.client import VerlScore

    recipe = write(tmp_path, "recipe.yaml", "components:\n  - kind: model\n  - kind: math\n    weight: 2\n")
    server = serve(tiny_bundle, "--precision", "fp32", "--reward-recipe", str(recipe))
    compute_score = pickle.loads(pickle.dumps(VerlScore(server.url)))  # verl ships it to its reward workers
    got = compute_score("openai/gsm8k", "So \\boxed{4}.", "4", {"question": "What is 2+2?"})
    item = {"prompt": "What is 2+2?", "completion": "So \\boxed{4}.", "reference": "4"}
    want = httpx.post(server.url + "/score", json={"items": [item]}).json()
    print("verl compute_score:", got)
    assert got == {"score": want["scores"][0], "model": want["components"]["model"][0], "math": 1.0}
