"""Closed-loop HTTP load: N concurrent clients, each sending requests of k pairs back to back, over loopback."""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams, as a closed-loop client holds one.

    The load generator shares the server's two cores, so its own CPU per request is taken from the server:
    this costs a few lines of parsing per request, where an httpx pool's bookkeeping grows with the number of
    open connections (measured in docs/benchmarks.md).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode("ascii") + body)
        status_line = await self.reader.readline()
        if not status_line:  # the server closed the connection without answering: counted as status 0
            await self.close()
            return 0, b""
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                close = value == "close"
        if chunked:
            parts = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size + 2))
            await self.reader.readline()
            payload = b"".join(p[:-2] for p in parts)
        else:
            payload = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def run_load(
    url: str,
    prompts: Sequence[str],
    completions: Sequence[str],
    clients: int,
    pairs_per_request: int,
    requests: int,
    path: str = "/score",
    with_metrics: bool = False,
) -> dict[str, Any]:
    """Send `requests` requests from `clients` concurrent clients; throughput and latency percentiles.

    Each client holds one keep-alive connection. With `with_metrics`, the service's batch size and padding over
    exactly the measured interval are added.
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_request = 0
    n = len(prompts)

    def payload(i: int) -> bytes:
        start = (i * pairs_per_request) % n
        idx = [(start + j) % n for j in range(pairs_per_request)]
        return json.dumps({"items": [{"prompt": prompts[j], "completion": completions[j]} for j in idx]}).encode()

    async def client(connection: Connection) -> None:
        nonlocal next_request
        while next_request < requests:
            i = next_request
            next_request += 1
            body = payload(i)
            started = time.perf_counter()
            status, _ = await connection.post(path, body)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    connections = [Connection(url) for _ in range(clients)]
    try:
        # Warm-up: a few requests open connections and touch every code path; they are not measured.
        warm = min(clients, 8)
        requests, measured = warm, requests
        await asyncio.gather(*(client(c) for c in connections[:warm]))
        requests = measured
        latencies.clear()
        statuses.clear()
        next_request = 0
        before = scrape(url) if with_metrics else {}
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in connections))
        elapsed = time.perf_counter() - started
        batching = batching_stats(before, scrape(url)) if with_metrics else {}
    finally:
        for c in connections:
            await c.close()
    ok = statuses.get(200, 0)
    return batching | {
        "clients": clients,
        "pairs_per_request": pairs_per_request,
        "requests": requests,
        "elapsed_s": elapsed,
        "pairs_per_s": ok * pairs_per_request / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
        "statuses": statuses,
    }


def scrape(url: str) -> dict[str, float]:
    """Counters and histogram sums/counts from /metrics, flattened to name{labels} -> value."""
    values: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def batching_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean batch size and padding fraction over the interval between two scrapes."""

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    batches = delta("rm_batch_size_count")
    real, pad = delta('rm_tokens_total{kind="real"}'), delta('rm_tokens_total{kind="padding"}')
    return {
        "mean_batch_size": delta("rm_batch_size_sum") / batches if batches else float("nan"),
        "padding_fraction": pad / (real + pad) if real + pad else float("nan"),
        "batches": batches,
    }


class StdlibClient:
    """Keep-alive HTTP/1.1 POSTs of JSON over the standard library's http.client.

    The least client-side work per request of the Python clients tried: the latency it sees is the server's,
    where httpx adds its own request building and parsing (reported beside it as the heavier client's view).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=600)

    def post(self, path: str, body: Any) -> bytes:
        data = json.dumps(body).encode()
        self.connection.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {response.status}: {payload[:200]!r}")
        return payload

    def close(self) -> None:
        self.connection.close()


def paired_latency(
    url: str,
    prompts: Sequence[str],
    completions: Sequence[str],
    score_offline: Callable[[int], object],
    repeats: int,
    tokenize_offline: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """One client, one pair per request, each request timed right after the same pair scored offline in-process.

    Pairing each request with its own offline run cancels the machine's drift (this box is shared and its speed
    wanders by tens of percent over minutes), so the median difference is the serving overhead itself:
    HTTP, JSON, validation, tokenisation, queueing and thread hand-offs. Each pair is sent twice, once with the
    standard library's client (the headline: the server's own cost) and once with httpx (what a client built on
    it sees). With `tokenize_offline`, the same pair is also tokenised in-process, and the overhead beyond that
    (the serving path's own cost) is reported too.
    """
    samples: dict[str, list[float]] = {k: [] for k in ("service", "offline", "overhead", "httpx", "tokenize", "beyond")}
    stdlib = StdlibClient(url)
    with httpx.Client(base_url=url, timeout=600) as http:
        warm = {"items": [{"prompt": prompts[0], "completion": completions[0]}]}
        http.post("/score", json=warm).raise_for_status()
        stdlib.post("/score", warm)
        score_offline(0)
        for _ in range(repeats):
            for i in range(len(prompts)):
                started = time.perf_counter()
                score_offline(i)
                alone = time.perf_counter() - started
                body = {"items": [{"prompt": prompts[i], "completion": completions[i]}]}
                started = time.perf_counter()
                stdlib.post("/score", body)
                served = time.perf_counter() - started
                started = time.perf_counter()
                http.post("/score", json=body).raise_for_status()
                samples["httpx"].append(time.perf_counter() - started - alone)
                samples["service"].append(served)
                samples["offline"].append(alone)
                samples["overhead"].append(served - alone)
                if tokenize_offline is not None:
                    started = time.perf_counter()
                    tokenize_offline(i)
                    samples["tokenize"].append(time.perf_counter() - started)
                    samples["beyond"].append(served - alone - samples["tokenize"][-1])
    stdlib.close()
    median = {k: statistics.median(v) * 1000 for k, v in samples.items() if v}
    result = {
        "p50_ms": median["service"],
        "offline_p50_ms": median["offline"],
        "overhead_ms": median["overhead"],
        "overhead_httpx_ms": median["httpx"],
        "samples": len(samples["overhead"]),
    }
    if "tokenize" in median:
        result["tokenize_p50_ms"] = median["tokenize"]
        result["overhead_beyond_tokenize_ms"] = median["beyond"]
    return result
