"""TRL unchanged but for its URL: real GRPOTrainer and RLOOTrainer runs (2 steps, CPU, a tiny random GPT-2 policy)
rewarded by the live service, with string prompts and with conversational prompts, and OnlineDPOTrainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from builders import TOPICS, make_tiny_lm
from servers import LiveServer

from service.client import RewardClient, RewardFunction

trl = pytest.importorskip("trl", reason="trl is in the dev extra")


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 language model with a real byte-level BPE tokenizer and a chat template."""
    return make_tiny_lm(tmp_path_factory.mktemp("policy"), "gpt2", chat=True)


def dataset(conversational: bool) -> Any:
    from datasets import Dataset

    questions = [f"Question {i}: tell me something about {t}." for i, t in enumerate(TOPICS[:4])]
    prompts: list[Any] = [[{"role": "user", "content": q}] for q in questions] if conversational else questions
    return Dataset.from_dict({"prompt": prompts})


@pytest.mark.parametrize("trainer_name", ["GRPO", "RLOO"])
@pytest.mark.parametrize("conversational", [False, True])
def test_grpo_and_rloo_log_the_services_rewards(
    trainer_name: str, conversational: bool, policy: Path, live_server: LiveServer, tmp_path: Path
) -> None:
    config_class, trainer_class = getattr(trl, trainer_name + "Config"), getattr(trl, trainer_name + "Trainer")
    args = config_class(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        logging_steps=1,
        report_to="none",
        learning_rate=1e-3,
        seed=0,
        save_strategy="no",
    )
    reward = RewardFunction(live_server.url, name="service_rm")
    trainer = trainer_class(model=str(policy), reward_funcs=[reward], args=args, train_dataset=dataset(conversational))
    trainer.train()
    logged = list(
        zip(trainer._logs["prompt"], trainer._logs["completion"], trainer._logs["rewards"]["service_rm"], strict=True)
    )
    assert len(logged) >= 4  # the last generation batch (TRL keeps one batch of logs)
    with RewardClient(live_server.url) as rm:
        direct = rm.score([p for p, _, _ in logged], [c for _, c, _ in logged])
    first = f"{logged[0][2]!r} (service: {direct[0]!r}) for {logged[0][1]!r}"
    print(f"{trainer_name} logged {len(logged)} rewards; first: {first}")
    assert [r for _, _, r in logged] == pytest.approx(direct, abs=1e-6)
    assert any("rewards/service_rm/mean" in entry for entry in trainer.state.log_history)


class RecordedRewards(RewardFunction):
    """The service's reward function, keeping what TRL asked and what it got (OnlineDPO logs only means)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, name="service_rm")
        self.calls: list[tuple[list[Any], list[Any], list[float | None]]] = []

    def __call__(self, prompts: Any, completions: Any, **kwargs: Any) -> list[float | None]:
        rewards = super().__call__(prompts, completions, **kwargs)
        self.calls.append((list(prompts), list(completions), rewards))
        return rewards


def test_online_dpo_ranks_its_pairs_by_the_services_rewards(
    policy: Path, live_server: LiveServer, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    args = OnlineDPOConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=2,
        max_new_tokens=8,
        max_steps=2,
        logging_steps=1,
        report_to="none",
        seed=0,
        save_strategy="no",
    )
    reward = RecordedRewards(live_server.url)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    trainer = OnlineDPOTrainer(
        model=str(policy), reward_funcs=reward, args=args, train_dataset=dataset(True), processing_class=tokenizer
    )
    trainer.train()
    assert len(reward.calls) == 2  # one call per step, both completions of each prompt
    with RewardClient(live_server.url) as rm:
        for prompts, completions, rewards in reward.calls:
            assert rewards == pytest.approx(rm.score(prompts, completions), abs=1e-6)
    logged = [entry["objective/scores"] for entry in trainer.state.log_history if "objective/scores" in entry]
    means = [sum(r for r in rewards if r is not None) / len(rewards) for _, _, rewards in reward.calls]
    print(f"OnlineDPO logged objective/scores {logged}; the service's rewards averaged {means}")
    assert logged == pytest.approx(means, abs=1e-5)


def test_grpo_on_math_logs_each_recipe_component(policy: Path, tiny_bundle: Path, tmp_path: Path, serve: Any) -> None:
    """GRPO on a small math set: the dataset's `solution` column reaches the recipe's math verifier, and TRL logs the
    model, math and format components each under its own name (one request per batch for all three)."""
    from datasets import Dataset

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "components:\n  - kind: model\n  - kind: math\n  - kind: format\n    pattern: '.*\\\\boxed\\{.*\\}.*'\n"
    )
    server = serve(tiny_bundle, "--precision", "fp32", "--reward-recipe", str(recipe))
    data = Dataset.from_dict(
        {
            "prompt": [f"What is {i} + {i}? Put the answer in \\boxed{{}}." for i in range(4)],
            "solution": ["0", "2", "4", "6"],
        }
    )
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        logging_steps=1,
        report_to="none",
        learning_rate=1e-3,
        seed=0,
        save_strategy="no",
    )
    funcs = RewardFunction.per_component(server.url, ["model", "math", "format"])
    trainer = trl.GRPOTrainer(model=str(policy), reward_funcs=funcs, args=args, train_dataset=data)
    trainer.train()
    logged = trainer._logs["rewards"]
    assert set(logged) == {"model", "math", "format"}
    prompts, completions = trainer._logs["prompt"], trainer._logs["completion"]
    solutions = {p: s for p, s in zip(data["prompt"], data["solution"], strict=True)}
    with RewardClient(server.url) as rm:
        [chunk] = rm._chunks(prompts, completions, None, [solutions[p] for p in prompts])
        direct = rm._post("/score", chunk)["components"]
    print("GRPO logged components:", {k: list(v)[:4] for k, v in logged.items()})
    for name in ("model", "math", "format"):
        assert list(logged[name]) == pytest.approx(direct[name], abs=1e-6), name
    assert all(f"rewards/{name}/mean" in str(trainer.state.log_history) for name in ("model", "math", "format"))
    requests = httpx.get(server.url + "/metrics").text
    assert 'rm_requests_total{endpoint="/score",status="200"} 3.0' in requests  # 2 steps + our check, not 3 per step
    # The column TRL passes reaches the verifier (the random policy above never writes a boxed answer).
    right = funcs[1](prompts=["What is 2 + 2?"], completions=["It is \\boxed{4}"], solution=["4"])
    wrong = funcs[1](prompts=["What is 2 + 2?"], completions=["It is \\boxed{5}"], solution=["4"])
    assert right == [1.0] and wrong == [0.0]
