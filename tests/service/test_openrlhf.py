"""OpenRLHF unchanged but for its URL: its own request code (openrlhf/utils/agent.py, from the installed package)
against the live service, and how policy queries become the reward model's pairs."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import pytest
from builders import make_chatml_tokenizer
from servers import LiveServer

from service.protocols.rollouts import to_pair

SYSTEM = {"role": "system", "content": "Be kind."}
QUESTIONS = [f"Question {i}: tell me something about {t}." for i, t in enumerate(["tea", "maps", "chess", "trains"])]
ANSWERS = ["tea is kind and helpful.", "maps is awful junk.", "chess is clear great.", "trains is rude nonsense."]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """agent.py loaded from the installed openrlhf as a file; only its logging import is stubbed (the package's
    __init__ pulls in GPU stacks its --no-deps install does not have)."""
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or spec.origin is None:
        pytest.skip("openrlhf is not installed (make install runs: pip install --no-deps openrlhf)")
    logging_utils = types.ModuleType("openrlhf.utils.logging_utils")
    logging_utils.init_logger = logging.getLogger  # type: ignore[attr-defined]
    stubs = {"openrlhf": types.ModuleType("openrlhf"), "openrlhf.utils": types.ModuleType("openrlhf.utils")}
    saved = {name: sys.modules.get(name) for name in [*stubs, "openrlhf.utils.logging_utils"]}
    sys.modules.update(stubs | {"openrlhf.utils.logging_utils": logging_utils})
    try:
        path = Path(spec.origin).parent / "utils" / "agent.py"
        module_spec = importlib.util.spec_from_file_location("openrlhf_agent_under_test", path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return module


@pytest.fixture(scope="module")
def policy_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_chatml_tokenizer(tmp_path_factory.mktemp("policy-tokenizer"))


class FakeEngine:
    """vLLM's place in OpenRLHF's rollout: `generate` answers each prompt with a scripted response (+ EOS)."""

    def __init__(self, tokenizer: Any, answers: dict[str, str]) -> None:
        self.tokenizer, self.answers = tokenizer, answers

    async def generate(self, prompt_token_ids: list[int], sampling_params: Any, multi_modal_data: Any = None) -> Any:
        prompt = self.tokenizer.decode(prompt_token_ids, skip_special_tokens=False)
        answer = next(a for q, a in self.answers.items() if q in prompt)
        ids = self.tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        await asyncio.sleep(0.01)
        return types.SimpleNamespace(
            outputs=[types.SimpleNamespace(token_ids=ids, finish_reason="stop", logprobs=None)]
        )


def chat_prompt(tokenizer: Any, question: str) -> str:
    return str(
        tokenizer.apply_chat_template(
            [SYSTEM, {"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    )


async def rollouts(agent: Any, tokenizer: Any, urls: list[str], prompts: list[str], max_length: int) -> list[Any]:
    executor = agent.SingleTurnAgentExecutor(urls)
    engine = FakeEngine(tokenizer, dict(zip(QUESTIONS, ANSWERS, strict=True)))
    params = types.SimpleNamespace(max_tokens=16, logprobs=None)
    return await asyncio.gather(*(executor.execute(p, "", params, max_length, tokenizer, engine) for p in prompts))


def expected(url: str, question: str) -> float:
    """What the reward model gives the pair in its own formatting (here a text pair over the conversation)."""
    item = {
        "prompt": [SYSTEM, {"role": "user", "content": question}],
        "completion": [{"role": "assistant", "content": ANSWERS[QUESTIONS.index(question)]}],
    }
    return float(httpx.post(url + "/score", json={"items": [item]}).json()["scores"][0])


def split_counts(url: str, repair: str = "none") -> dict[tuple[str, str], float]:
    text = httpx.get(url + "/metrics").text
    found = re.findall(r'rm_openrlhf_splits_total\{markup="(\w+)",repair="(\w+)",split="(\w+)"\} ([0-9.]+)', text)
    return {(split, markup): float(n) for markup, fix, split, n in found if fix == repair}


def test_openrlhf_rollouts_get_their_rewards(agent: Any, policy_tokenizer: Any, tiny_bundle: Path) -> None:
    server = LiveServer(tiny_bundle, "--precision", "fp32")
    try:
        server.wait_ready()
        url = server.url + "/get_reward"
        prompts = [chat_prompt(policy_tokenizer, q) for q in QUESTIONS]
        normal = asyncio.run(rollouts(agent, policy_tokenizer, [url], prompts, max_length=512))
        # A budget that leaves the prompt 6 tokens short: OpenRLHF keeps its last tokens only.
        short = len(policy_tokenizer(text=prompts[0], add_special_tokens=False)["input_ids"]) - 6 + 16
        truncated = asyncio.run(rollouts(agent, policy_tokenizer, [url], prompts[:1], max_length=short))
        query = policy_tokenizer.decode(truncated[0]["observation_tokens"], skip_special_tokens=False)
        assert not query.startswith(prompts[0])  # the case that used to get a 422 and lose the reward
        concurrent = asyncio.run(rollouts(agent, policy_tokenizer, [url], prompts * 4, max_length=512))
        for out, question in zip(
            normal + truncated + concurrent, QUESTIONS + QUESTIONS[:1] + QUESTIONS * 4, strict=True
        ):
            assert isinstance(out["reward"][0], float)
            # The policy's ChatML was recognised and the reward model got its own formatting of the same turns.
            assert out["reward"][0] == pytest.approx(expected(server.url, question), abs=1e-6)
            assert set(out["extra_logs"]) == {"raw_reward", "truncated"}
        print("OpenRLHF rollout:", {k: v for k, v in normal[0].items() if k in ("reward", "scores", "extra_logs")})
        counts = split_counts(server.url)
        print("rm_openrlhf_splits_total:", counts)
        assert counts[("prefix", "chatml")] == 4 + 16 and counts[("suffix", "chatml")] == 1
    finally:
        server.stop()


def test_openrlhf_labels_reach_the_verifiers_and_each_component_is_logged(
    agent: Any, policy_tokenizer: Any, tiny_bundle: Path, tmp_path: Path, serve: Any
) -> None:
    """`--label_key answer`: OpenRLHF sends each sample's label; a math recipe checks the response against it and
    every component comes back in extra_logs, which OpenRLHF logs."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("components:\n  - kind: model\n  - kind: math\n    weight: 2\n")
    server = serve(tiny_bundle, "--precision", "fp32", "--reward-recipe", str(recipe))
    questions = {"What is 2+2?": ("The sum is \\boxed{4}", "4"), "What is 3*3?": ("I think \\boxed{6}", "9")}
    executor = agent.SingleTurnAgentExecutor([server.url + "/get_reward"])
    engine = FakeEngine(policy_tokenizer, {q: a for q, (a, _) in questions.items()})
    params = types.SimpleNamespace(max_tokens=16, logprobs=None)

    async def main() -> list[Any]:
        runs = [
            executor.execute(chat_prompt(policy_tokenizer, q), label, params, 512, policy_tokenizer, engine)
            for q, (_, label) in questions.items()
        ]
        return list(await asyncio.gather(*runs))

    right, wrong = asyncio.run(main())
    print("OpenRLHF rollout with a recipe:", {k: right[k] for k in ("reward", "extra_logs")})
    assert right["extra_logs"]["math"] == [1.0] and wrong["extra_logs"]["math"] == [0.0]
    for out in (right, wrong):
        logs = out["extra_logs"]
        assert {"model", "math", "raw_reward", "truncated"} <= set(logs)
        assert out["reward"][0] == pytest.approx(logs["model"][0] + 2 * logs["math"][0], abs=1e-6)


def test_two_replicas_share_a_rollout(agent: Any, policy_tokenizer: Any, tiny_bundle: Path) -> None:
    """`--reward.remote_url a,b`: OpenRLHF rotates the servers per request."""
    servers = [LiveServer(tiny_bundle, "--precision", "fp32") for _ in range(2)]
    try:
        for s in servers:
            s.wait_ready()
        prompts = [chat_prompt(policy_tokenizer, q) for q in QUESTIONS] * 4
        outs = asyncio.run(rollouts(agent, policy_tokenizer, [s.url + "/get_reward" for s in servers], prompts, 512))
        assert all(isinstance(o["reward"][0], float) for o in outs)
        served = []
        for s in servers:
            line = re.search(
                r'rm_requests_total\{endpoint="/get_reward",status="200"\} ([0-9.]+)',
                httpx.get(s.url + "/metrics").text,
            )
            served.append(float(line.group(1)) if line else 0.0)
        print("/get_reward requests per replica:", served)
        assert served == [8.0, 8.0]
    finally:
        for s in servers:
            s.stop()


@pytest.mark.parametrize(
    ("prompt", "response", "markup"),
    [
        ("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n", "A.<|im_end|>", "chatml"),
        (
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            "A.<|eot_id|>",
            "llama3",
        ),
        ("<s>[INST] Q? [/INST]", " A.</s>", "mistral"),
        ("<bos><start_of_turn>user\nQ?<end_of_turn>\n<start_of_turn>model\n", "A.<end_of_turn>\n", "gemma"),
        ("\n\nHuman: Q?\n\nAssistant:", " A.", "transcript"),
    ],
)
def test_each_policy_markup_becomes_the_same_conversation(prompt: str, response: str, markup: str) -> None:
    pair = to_pair(prompt + response, prompt)
    assert pair.markup == markup and pair.how == "prefix"
    assert pair.prompt == [{"role": "user", "content": "Q?"}]
    assert pair.completion == [{"role": "assistant", "content": "A."}]


def test_queries_that_do_not_start_with_their_prompt() -> None:
    prompt = "<|im_start|>user\nTell me about tea, 中文 🍵<|im_end|>\n<|im_start|>assistant\n"
    cut = "\ufffd\ufffd" + prompt[prompt.index("🍵") + 1 :] + "tea is kind.<|im_end|>"  # cut inside the emoji
    pair = to_pair(cut, prompt)
    assert pair.how == "suffix" and pair.completion == [{"role": "assistant", "content": "tea is kind."}]
    assert pair.prompt == [{"role": "user", "content": "Tell me about tea, 中文 🍵"}]
    unrelated = to_pair("something else entirely</s>", "xyz")
    assert (unrelated.how, unrelated.markup, unrelated.prompt, unrelated.completion) == (
        "whole",
        "none",
        "",
        "something else entirely",
    )
    no_prompt = to_pair("\n\nHuman: hi\n\nAssistant: hello", None)
    assert no_prompt.how == "no_prompt" and no_prompt.completion == [{"role": "assistant", "content": "hello"}]
