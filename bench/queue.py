"""The service's batch queue alone (no model, no HTTP): per-pair cost of draining n queued pairs, small n vs large."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import time

import numpy as np

from service.core.batcher import MicroBatcher
from service.core.settings import CPU_LIMITS


class _Pair:
    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


def drain_us_per_pair(n: int, seed: int = 0) -> float:
    """Queue n pairs of real-ish lengths at once, score them with a no-op model under the CPU batch limits."""

    async def main() -> float:
        batcher = MicroBatcher(
            lambda items: np.zeros(len(items), dtype=np.float32),
            int(CPU_LIMITS["max_batch_tokens"]),
            int(CPU_LIMITS["max_batch_size"]),
            0.0,
            max_queue=n,
            max_padding=CPU_LIMITS["max_padding"],
        )
        batcher.start()
        rng = random.Random(seed)
        pairs = [_Pair(rng.randint(20, 256)) for _ in range(n)]
        started = time.perf_counter()
        await batcher.scores(pairs)
        elapsed = time.perf_counter() - started
        await batcher.close()
        return elapsed / n * 1e6

    return asyncio.run(main())


def queue_scaling(small: int, big: int, repeats: int) -> dict[str, float]:
    """Median per-pair drain cost at both sizes; their ratio is ~1 when no step of the queue is quadratic."""
    small_us = statistics.median(drain_us_per_pair(small, seed) for seed in range(repeats))
    big_us = statistics.median(drain_us_per_pair(big, seed) for seed in range(repeats))
    return {"small_pairs": small, "big_pairs": big, "small_us": small_us, "big_us": big_us, "ratio": big_us / small_us}


def queue_scaling_alone(small: int, big: int, repeats: int) -> dict[str, float]:
    """`queue_scaling` in a fresh process: inside the benchmark's own (sessions, servers' clients, a big heap)
    the same measurement read 2.5x where a fresh process reads 1.1x."""
    command = [sys.executable, "-m", "bench.queue", str(small), str(big), str(repeats)]
    result: dict[str, float] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return result


if __name__ == "__main__":
    print(json.dumps(queue_scaling(*(int(a) for a in sys.argv[1:4]))))
