"""TRL unchanged but for its URL: a real GRPOTrainer (2 steps, CPU, a tiny random GPT-2 policy) rewarded by the live
service, with string prompts and with conversational prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from builders import TOPICS, make_tiny_lm
from servers import LiveServer

from service.client import RewardClient, RewardFunction

trl = pytest.importorskip("trl", reason="trl is in the dev extra")


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 language model with a real byte-level BPE tokenizer and a chat template."""
    return make_tiny_lm(tmp_path_factory.mktemp("policy"), "gpt2", chat=True)


@pytest.mark.parametrize("conversational", [False, True])
def test_grpo_logs_the_services_rewards(
    conversational: bool, policy: Path, live_server: LiveServer, tmp_path: Path
) -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    questions = [f"Question {i}: tell me something about {t}." for i, t in enumerate(TOPICS[:4])]
    prompts: list[Any] = [[{"role": "user", "content": q}] for q in questions] if conversational else questions
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
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
    trainer = GRPOTrainer(
        model=str(policy), reward_funcs=[reward], args=args, train_dataset=Dataset.from_dict({"prompt": prompts})
    )
    trainer.train()
    logged = list(
        zip(trainer._logs["prompt"], trainer._logs["completion"], trainer._logs["rewards"]["service_rm"], strict=True)
    )
    assert len(logged) >= 4  # the last generation batch (TRL keeps one batch of logs)
    with RewardClient(live_server.url) as rm:
        direct = rm.score([p for p, _, _ in logged], [c for _, c, _ in logged])
    print(f"GRPO logged {len(logged)} rewards; first: {logged[0][2]!r} (service: {direct[0]!r}) for {logged[0][1]!r}")
    assert [r for _, _, r in logged] == pytest.approx(direct, abs=1e-6)
    assert any("rewards/service_rm/mean" in entry for entry in trainer.state.log_history)
