"""RewardClient, AsyncRewardClient and reward_fn against a live server."""

from __future__ import annotations

import asyncio
import inspect
import pickle

import pytest
from servers import LiveServer

from models.messages import FormatError
from service.client import (
    AsyncRewardClient,
    AsyncRewardFunction,
    RewardClient,
    RewardFunction,
    RewardServiceError,
    reward_fn,
)


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


def test_reward_function_takes_every_shape_trl_sends(live_server: LiveServer) -> None:
    fn = RewardFunction(live_server.url, name="helpfulness")
    assert fn.__name__ == "helpfulness"  # what TRL logs it under (rewards/helpfulness/mean)
    prompt = [{"role": "user", "content": [{"type": "text", "text": "Question 1:"}, {"type": "text", "text": "tea?"}]}]
    blocks = fn(prompts=[prompt], completions=[[{"role": "assistant", "content": [{"type": "text", "text": "ok"}]}]])
    joined = fn(
        prompts=[[{"role": "user", "content": "Question 1:\ntea?"}]],
        completions=[[{"role": "assistant", "content": "ok"}]],
    )
    assert blocks == joined  # text blocks are joined
    tool = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "brew", "arguments": '{"leaf": "green"}'}}],
        }
    ]
    rendered = [
        {"role": "assistant", "content": '<tool_call>{"name": "brew", "arguments": {"leaf": "green"}}</tool_call>'}
    ]
    assert fn(prompts=[prompt], completions=[tool]) == fn(prompts=[prompt], completions=[rendered])
    with_image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Question 1:\ntea?"}]}]
    with pytest.raises(FormatError, match="image content block"):
        fn(prompts=[with_image], completions=["ok"])
    lenient = RewardFunction(live_server.url, images="ignore")
    assert lenient(prompts=[with_image], completions=[[{"role": "assistant", "content": "ok"}]]) == joined


def test_reward_functions_pickle_run_async_and_follow_their_failure_policy(live_server: LiveServer) -> None:
    fn = RewardFunction(live_server.url, name="rm_a")
    want = fn(prompts=["Question 1: tea?"], completions=["tea is kind."])
    copy = pickle.loads(pickle.dumps(fn))  # TRL's async GRPO ships reward functions to a child process
    assert copy.__name__ == "rm_a" and copy(prompts=["Question 1: tea?"], completions=["tea is kind."]) == want
    afn = AsyncRewardFunction(live_server.url, name="rm_b")
    assert inspect.iscoroutinefunction(afn.__call__)  # how TRL decides to await it
    assert asyncio.run(afn(prompts=["Question 1: tea?"], completions=["tea is kind."])) == want
    assert asyncio.run(afn(prompts=["Question 1: tea?"], completions=["tea is kind."])) == want  # a new loop
    assert pickle.loads(pickle.dumps(afn)).__name__ == "rm_b"
    dead = "http://127.0.0.1:9"
    assert RewardFunction(dead, on_error="none", retries=1, backoff=0.01)(prompts=["p"] * 2, completions=["c"] * 2) == [
        None,
        None,
    ]
    assert asyncio.run(AsyncRewardFunction(dead, on_error="none", retries=0)(prompts=["p"], completions=["c"])) == [
        None
    ]
    with pytest.raises(RewardServiceError, match="cannot reach"):
        RewardFunction(dead, retries=0)(prompts=["p"], completions=["c"])
