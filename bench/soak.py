"""Soak: many concurrent clients mixing valid and invalid requests against a live server, checking every answer.

Valid requests carry pairs whose scores were computed offline beforehand; every 200 must return exactly those
scores in order (no mixed-up responses), every invalid request must get its 4xx, 429 must appear under
overload, and no other 5xx may appear. Resident memory is sampled after warm-up and at the end.
Run: python -m bench.soak --bundle DIR --seconds 120 --clients 128
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from models.bundle import read_bundle
from models.runtime import BundleScorer
from service.launch import ServiceServer

from . import data

INVALID = [
    (b"{not json", 422),
    (b'{"items": []}', 422),
    (b'{"items": [{"prompt": 1, "completion": "c"}]}', 422),
    (b'{"items": [{"prompt": "p"}]}', 422),
    (b"\xff\xfe", 400),
    (b'{"items": "x"}', 422),
    (b'{"items": [{"prompt": "\\ud800", "completion": "c"}]}', 422),
    (b"[]", 422),
]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def soak(
    url: str,
    pid: int,
    prompts: list[str],
    completions: list[str],
    expected: np.ndarray,
    seconds: float,
    clients: int,
    warmup: float,
) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    wrong = 0
    unexpected: list[str] = []
    deadline = time.monotonic() + warmup + seconds
    rss: dict[str, int] = {}

    async def client(seed: int, http: httpx.AsyncClient) -> None:
        nonlocal wrong
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            if rng.random() < 0.2:
                body, want = rng.choice(INVALID)
                r = await http.post("/score", content=body, headers={"content-type": "application/json"})
                key = f"invalid->{r.status_code}"
                if r.status_code not in (want, 429):
                    unexpected.append(f"invalid got {r.status_code}: {r.text[:100]}")
            else:
                idx = [rng.randrange(len(prompts)) for _ in range(rng.choice((1, 1, 2, 4, 16)))]
                body_json = {"items": [{"prompt": prompts[i], "completion": completions[i]} for i in idx]}
                r = await http.post("/score", json=body_json)
                key = f"valid->{r.status_code}"
                if r.status_code == 200:
                    got = np.array(r.json()["scores"], dtype=np.float64)
                    if got.shape != (len(idx),) or np.max(np.abs(got - expected[idx])) > 1e-5:
                        wrong += 1
                elif r.status_code != 429:
                    unexpected.append(f"valid got {r.status_code}: {r.text[:100]}")
            statuses[key] = statuses.get(key, 0) + 1

    async def sampler() -> None:
        await asyncio.sleep(warmup)
        rss["after_warmup_kib"] = rss_kib(pid)
        statuses.clear()

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(sampler(), *(client(i, http) for i in range(clients)))
    rss["end_kib"] = rss_kib(pid)
    return {
        "seconds": seconds,
        "clients": clients,
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "wrong_scores": wrong,
        "unexpected": unexpected[:20],
        "unexpected_count": len(unexpected),
        "rss": rss,
        "rss_growth": rss["end_kib"] / max(1, rss["after_warmup_kib"]) - 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="bundles/default")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--queue", type=int, default=64, help="RM_MAX_QUEUE_PAIRS: small, so 429 is exercised.")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", help="Write the result here.")
    args = parser.parse_args(argv)
    bundle = read_bundle(args.bundle)
    prompts, completions, _ = data.sample(256, seed=1)
    expected = BundleScorer(bundle, args.precision, device="cpu").score(prompts, completions).astype(np.float64)
    env = {
        "RM_PRECISION": args.precision,
        "RM_MAX_QUEUE_PAIRS": str(args.queue),
        "RM_MAX_ITEMS_PER_REQUEST": "16",
        "RM_LOG_LEVEL": "warning",
        "RM_INTRA_OP_THREADS": str(min(2, os.cpu_count() or 2)),
    }
    server = ServiceServer(args.bundle, env=env, capture=False).wait_ready()
    try:
        result = asyncio.run(
            soak(server.url, server.proc.pid, prompts, completions, expected, args.seconds, args.clients, args.warmup)
        )
    finally:
        server.stop()
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    ok = not result["unexpected_count"] and not result["wrong_scores"] and result["rss_growth"] < 0.10
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
