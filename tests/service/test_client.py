"""RewardClient, AsyncRewardClient and reward_fn against a live server."""

from __future__ import annotations

import asyncio

import pytest
from servers import LiveServer

from service.client import AsyncRewardClient, RewardClient, RewardServiceError, reward_fn


def test_sync_client_scores_in_chunks_and_compares(live_server: LiveServer) -> None:
    prompts = [f"Question {i}: tell me something about tea." for i in range(25)]
    completions = ["tea is glad kind." if i % 2 else "tea is rude junk." for i in range(25)]
    with RewardClient(live_server.url, chunk_size=4) as rm:
        scores = rm.score(prompts, completions)
        assert len(scores) == 25
        assert scores == RewardClient(live_server.url).score(prompts, completions)  # chunking changes nothing
        result = rm.compare(prompts[0], [completions[0], completions[1]])
        assert result["ranking"] == [1, 0]
        assert rm.info()["precision"] == "fp32"


def test_async_client(live_server: LiveServer) -> None:
    async def main() -> list[float]:
        async with AsyncRewardClient(live_server.url, chunk_size=3) as rm:
            return await rm.score(["a"] * 7, [f"answer {i}" for i in range(7)])

    scores = asyncio.run(main())
    assert scores == RewardClient(live_server.url).score(["a"] * 7, [f"answer {i}" for i in range(7)])


def test_reward_fn_has_grpo_signature(live_server: LiveServer) -> None:
    fn = reward_fn(live_server.url)
    plain = fn(prompts=["Question 1: tea?"] * 2, completions=["tea is kind.", "tea is junk."], ground_truth=["", ""])
    assert len(plain) == 2 and plain[0] > plain[1]
    conversational = fn(
        prompts=[[{"role": "user", "content": "Question 1: tea?"}]],
        completions=[[{"role": "assistant", "content": "tea is kind."}]],
    )
    assert isinstance(conversational[0], float)


def test_client_raises_server_errors_and_gives_up_on_dead_servers(live_server: LiveServer) -> None:
    with pytest.raises(RewardServiceError, match="422"):
        RewardClient(live_server.url).compare("p", ["only one"])
    with pytest.raises(RewardServiceError, match="cannot reach"):
        RewardClient("http://127.0.0.1:9", retries=1, backoff=0.01).score(["p"], ["c"])
