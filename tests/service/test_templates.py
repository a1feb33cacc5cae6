"""Chat templates that refuse a conversation (Gemma-it, Mistral-Instruct, Llama-2-chat, as published): every dialect
answers its own 4xx naming the message at fault, and /get_reward rewrites the conversation instead (a legitimate
rollout never gets a 4xx), counting how in rm_openrlhf_splits_total."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from reward_models import GEMMA_IT_TEMPLATE, LLAMA2_CHAT_TEMPLATE, MISTRAL_INSTRUCT_TEMPLATE, make_reward_model
from servers import make_client

from service.protocols.rollouts import fold_system, merge_roles, repairs

SYSTEM = {"role": "system", "content": "Be kind."}
USER = {"role": "user", "content": "Question 1: tell me something about tea."}
MORE = {"role": "user", "content": "And maps?"}
ANSWER = "tea is kind and helpful."
# family: (architecture, template, a prompt its template refuses, the message at fault, the template's reason)
FAMILIES: dict[str, tuple[str, str, list[dict[str, str]], int, str]] = {
    "gemma-it": ("gemma", GEMMA_IT_TEMPLATE, [SYSTEM, USER], 0, "System role not supported"),
    "mistral-instruct": ("mistral", MISTRAL_INSTRUCT_TEMPLATE, [SYSTEM, USER], 0, "roles must alternate"),
    "llama-2-chat": ("llama", LLAMA2_CHAT_TEMPLATE, [USER, MORE], 1, "roles must alternate"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def refusing(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minilm_path: str
) -> Iterator[tuple[str, TestClient]]:
    """A real exported decoder bundle whose chat template is one that raises, served in-process."""
    from training.export.__main__ import main

    family = request.param
    architecture, template = FAMILIES[family][:2]
    folder = tmp_path_factory.mktemp(family)
    source = make_reward_model(folder / "hf", architecture, minilm_path, template=template)
    assert main(["--model", str(source), "--out", str(folder / "bundle"), "--precisions", "fp32"]) == 0
    with make_client(folder / "bundle", precision="fp32") as client:
        yield family, client


def chatml(messages: list[dict[str, str]], answer: str | None = None) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    text += "<|im_start|>assistant\n"
    return text if answer is None else text + answer + "<|im_end|>"


def test_every_dialect_answers_a_refused_conversation_with_its_own_4xx(refusing: tuple[str, TestClient]) -> None:
    family, client = refusing
    _, _, prompt, at, reason = FAMILIES[family]
    role = prompt[at]["role"]
    where = f"prompt message {at}, role '{role}'"

    ours = client.post(
        "/score", json={"items": [{"prompt": "hi", "completion": "ok"}, {"prompt": prompt, "completion": ANSWER}]}
    )
    assert ours.status_code == 422, ours.text
    assert ours.json()["type"] == "invalid_request" and ours.json()["field"] == "items.1"
    assert f"items.1 ({where})" in ours.json()["error"] and reason in ours.json()["error"]

    compare = client.post("/compare", json={"prompt": prompt, "completions": ["a", "b"]})
    assert compare.status_code == 422 and where in compare.json()["error"] and reason in compare.json()["error"]

    vllm = client.post("/pooling", json={"messages": [*prompt, {"role": "assistant", "content": ANSWER}]})
    assert vllm.status_code == 400, vllm.text
    error = vllm.json()["error"]
    assert error["type"] == "BadRequestError" and error["param"] == "messages" and where in error["message"]

    tei = client.post("/predict", json={"inputs": chatml(prompt, ANSWER)})  # a lone text in the policy's ChatML
    assert tei.status_code == 422, tei.text
    assert tei.json()["error_type"] == "Validation" and reason in tei.json()["error"]

    # The same conversation in a form the template takes is scored, and the server is unharmed.
    assert client.post("/score", json={"items": [{"prompt": "hi", "completion": "ok"}]}).status_code == 200


def repair_counts(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    found = re.findall(r'rm_openrlhf_splits_total\{markup="chatml",repair="(\w+)",split="prefix"\} ([0-9.]+)', text)
    return {repair: float(n) for repair, n in found}


def test_get_reward_rewrites_a_refused_rollout_and_counts_it(refusing: tuple[str, TestClient]) -> None:
    family, client = refusing
    prompt = FAMILIES[family][2]
    before = repair_counts(client)
    query = chatml(prompt, ANSWER)
    reward = client.post("/get_reward", json={"query": [query], "prompts": [chatml(prompt)]})
    assert reward.status_code == 200, reward.text
    # What was scored: the conversation with the system turn folded into the user's (Gemma, Mistral), or the two user
    # turns joined (Llama-2, which takes a system turn but not two user turns in a row).
    repaired = fold_system(prompt) if prompt[0]["role"] == "system" else merge_roles(prompt)
    want = client.post(
        "/score", json={"items": [{"prompt": repaired, "completion": [{"role": "assistant", "content": ANSWER}]}]}
    )
    assert reward.json()["rewards"] == pytest.approx(want.json()["scores"], abs=1e-6)
    expected_repair = "system_folded" if prompt[0]["role"] == "system" else "roles_merged"
    after = repair_counts(client)
    assert after.get(expected_repair, 0) == before.get(expected_repair, 0) + 1, (before, after)
    print(f"{family}: /get_reward {reward.json()['rewards']} via {expected_repair}")


def test_repairs_go_from_mild_to_bold_and_never_touch_the_completion() -> None:
    prompt: list[dict[str, Any]] = [SYSTEM, {"role": "tool", "content": "42"}, USER, MORE]
    completion = [{"role": "assistant", "content": ANSWER}]
    steps = list(repairs(prompt, completion))
    assert [name for name, _, _ in steps] == ["system_folded", "roles_merged", "flattened"]
    assert all(c is completion for _, _, c in steps)
    assert steps[0][1] == [
        {"role": "tool", "content": "42"},
        {"role": "user", "content": f"Be kind.\n\n{USER['content']}"},
        MORE,
    ]
    assert steps[1][1] == [{"role": "user", "content": f"42\n\nBe kind.\n\n{USER['content']}\n\nAnd maps?"}]
    assert steps[2][1] == [
        {
            "role": "user",
            "content": "System: Be kind.\n\nTool: 42\n\nHuman: " + USER["content"] + "\n\nHuman: And maps?",
        }
    ]
    assert list(repairs("a plain prompt", completion)) == []  # nothing to rewrite: the 4xx stands
    assert fold_system([SYSTEM]) == [{"role": "user", "content": "Be kind."}]
    assert merge_roles([{"role": "assistant", "content": "hi"}]) == [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "hi"},
    ]
