"""A pair's score does not depend on its batch; concurrent clients each get their own scores; overload is 429."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from servers import LiveServer, make_client

from models.bundle import read_bundle
from models.runtime import BundleScorer

WORDS = ["tea", "glad", "rude", "maps", "clear", "junk", "kind", "awful", "stars", "trains", "sure", "wrong"]


def random_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    prompts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(n)]
    completions = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30))) for _ in range(n)]
    return prompts, completions


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_one_row_in_a_batch_equals_the_same_row_alone(tiny_bundle: Path, precision: str) -> None:
    scorer = BundleScorer(read_bundle(tiny_bundle), precision, device="cpu")
    prompts, completions = random_pairs(48, seed=1)
    encoded = scorer.encode(prompts, completions)
    alone = np.array([scorer.run([e])[0] for e in encoded])
    rng = random.Random(2)
    for size in (2, 7, 16, 48):
        order = list(range(len(encoded)))
        rng.shuffle(order)  # unsorted: lots of padding
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            batch = scorer.run([encoded[i] for i in idx])
            assert np.max(np.abs(batch - alone[idx])) <= 1e-6, (precision, size)


@pytest.mark.parametrize("inline_chars", [0, 10**6])
def test_scores_do_not_depend_on_where_a_request_is_tokenised(tiny_bundle: Path, inline_chars: int) -> None:
    """Small requests are tokenised on the event loop, big ones in a thread: same ids, same scores."""
    prompts, completions = random_pairs(12, seed=5)
    expected = BundleScorer(read_bundle(tiny_bundle), "fp32", device="cpu").score(prompts, completions)
    items = [{"prompt": p, "completion": c} for p, c in zip(prompts, completions, strict=True)]
    with make_client(tiny_bundle, precision="fp32", inline_tokenize_chars=inline_chars) as client:
        alone = [client.post("/score", json={"items": [item]}).json()["scores"][0] for item in items]
        together = client.post("/score", json={"items": items}).json()["scores"]
        conversation = [{"role": "user", "content": prompts[0]}]
        chat = client.post("/score", json={"items": [{"prompt": conversation, "completion": completions[0]}]})
    assert np.max(np.abs(np.array(alone) - expected)) <= 1e-6
    assert np.max(np.abs(np.array(together) - expected)) <= 1e-6
    assert chat.status_code == 200 and np.isfinite(chat.json()["scores"][0])


def metric(text: str, name: str) -> float:
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.mark.parametrize("inline_chars", [0, 10**6])
def test_repeats_in_a_request_run_once_and_get_the_same_score(tiny_bundle: Path, inline_chars: int) -> None:
    """A GRPO group repeats completions: each distinct input runs once, every copy gets its score, in order."""
    prompts, completions = random_pairs(3, seed=9)
    long_text = " ".join(WORDS * 200)  # over the tiny model's max length: truncated, and counted per copy
    order = [0, 1, 0, 2, 1, 0, 3, 3]
    pairs = [(prompts[i], completions[i]) if i < 3 else ("why", long_text) for i in order]
    scorer = BundleScorer(read_bundle(tiny_bundle), "fp32", device="cpu")
    expected = scorer.score([p for p, _ in pairs], [c for _, c in pairs])
    items = [{"prompt": p, "completion": c} for p, c in pairs]
    with make_client(tiny_bundle, precision="fp32", inline_tokenize_chars=inline_chars) as client:
        before = client.get("/metrics").text
        body = client.post("/score", json={"items": items}).json()
        after = client.get("/metrics").text
    assert np.max(np.abs(np.array(body["scores"]) - expected)) <= 1e-6
    assert body["scores"][0] == body["scores"][2] == body["scores"][5] and body["scores"][1] == body["scores"][4]
    assert body["truncated"] == 2
    ran = metric(after, "rm_batch_size_sum") - metric(before, "rm_batch_size_sum")
    assert ran == 4  # distinct inputs
    assert metric(after, "rm_repeated_pairs_total") - metric(before, "rm_repeated_pairs_total") == 4
    assert metric(after, "rm_pairs_total") - metric(before, "rm_pairs_total") == 8


def test_200_concurrent_requests_get_their_own_scores(live_server: LiveServer, tiny_bundle: Path) -> None:
    prompts, completions = random_pairs(200, seed=3)
    expected = BundleScorer(read_bundle(tiny_bundle), "fp32", device="cpu").score(prompts, completions)

    async def main() -> list[float]:
        async with httpx.AsyncClient(
            base_url=live_server.url, timeout=60, limits=httpx.Limits(max_connections=200)
        ) as http:

            async def one(i: int) -> float:
                r = await http.post("/score", json={"items": [{"prompt": prompts[i], "completion": completions[i]}]})
                assert r.status_code == 200, r.text
                return float(r.json()["scores"][0])

            return await asyncio.gather(*(one(i) for i in range(200)))

    def batched() -> tuple[float, float]:
        """(batches run, pairs in them) so far."""
        lines = httpx.get(live_server.url + "/metrics").text.splitlines()
        count, total = (
            next(float(x.split()[-1]) for x in lines if x.startswith(k))
            for k in ("rm_batch_size_count", "rm_batch_size_sum")
        )
        return count, total

    before = batched()
    got = asyncio.run(main())
    after = batched()
    assert np.max(np.abs(np.array(got) - expected)) <= 1e-6
    assert after[1] - before[1] == 200  # every pair ran exactly once
    assert after[0] - before[0] < 200  # and requests shared batches (how many depends on the timing of arrivals)


def queued(url: str) -> float:
    lines = httpx.get(url + "/metrics").text.splitlines()
    return next(float(x.split()[-1]) for x in lines if x.startswith("rm_queue_depth "))


def test_full_queue_answers_429_with_retry_after(tiny_bundle: Path) -> None:
    env = {
        **os.environ,
        "RM_MAX_QUEUE_PAIRS": "8",
        "RM_MAX_ITEMS_PER_REQUEST": "8",
        "RM_MAX_WAIT_MS": "300",
        "RM_MAX_BATCH_SIZE": "64",
        "RM_MAX_BATCH_TOKENS": "100000",
        "RM_PRECISION": "fp32",
    }
    server = LiveServer(tiny_bundle, env=env)
    try:
        server.wait_ready()
        item = {"prompt": "p", "completion": "c"}
        distinct = [{"prompt": "p", "completion": f"c{i}"} for i in range(8)]  # repeats would share a queue slot

        async def main() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                first = asyncio.ensure_future(http.post("/score", json={"items": distinct}))
                while queued(server.url) < 8:  # the first request lingers 300 ms for batch mates, filling the queue
                    await asyncio.sleep(0.005)
                second = await http.post("/score", json={"items": [item]})
                return [await first, second]

        first, second = asyncio.run(main())
        assert first.status_code == 200
        assert second.status_code == 429 and second.headers["retry-after"] and second.json()["type"] == "overloaded"
        assert httpx.post(server.url + "/score", json={"items": [item]}).status_code == 200
    finally:
        server.stop()


def test_service_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import service.app, service.__main__, sys; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_client_that_disconnects_has_its_pairs_dropped(tiny_bundle: Path) -> None:
    env = {**os.environ, "RM_MAX_WAIT_MS": "1500", "RM_MAX_BATCH_SIZE": "512", "RM_PRECISION": "fp32"}
    server = LiveServer(tiny_bundle, env=env)
    try:
        server.wait_ready()
        items = {"items": [{"prompt": f"gone {i}", "completion": "x"} for i in range(7)]}
        with pytest.raises(httpx.TimeoutException):
            httpx.post(server.url + "/score", json=items, timeout=0.3)  # gives up while its pairs linger
        deadline = time.monotonic() + 10
        dropped = 0.0
        while time.monotonic() < deadline and dropped < 7:
            text = httpx.get(server.url + "/metrics").text
            dropped = next(float(x.split()[-1]) for x in text.splitlines() if x.startswith("rm_dropped_pairs_total"))
            time.sleep(0.1)
        assert dropped == 7
        assert (
            httpx.post(server.url + "/score", json={"items": [{"prompt": "p", "completion": "c"}]}).status_code == 200
        )
    finally:
        server.stop()
