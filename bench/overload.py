"""python -m bench.overload: the overload curve. Open-loop arrivals at 1x, 2x, 5x the service's knee (its closed-loop
capacity, measured first in the same run): goodput, 429 share, latency and the time to the first 429.

Open loop is what an RL rollout does to a reward server: requests keep arriving whether or not earlier ones were
answered. A server that queues without bound answers every request eventually, after the clients gave up; one that
admits by expected wait answers what it can in time and refuses the rest at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import time
from pathlib import Path
from typing import Any

from service.launch import ServiceServer

from . import data
from .load import Connection, percentile, run_load, scrape


async def open_loop(
    url: str, bodies: list[bytes], rate: float, seconds: float, client_timeout: float, max_open: int
) -> dict[str, Any]:
    """Send one request every 1/rate s for `seconds` (each on its own connection, as independent workers do), and
    wait for every answer up to `client_timeout`."""
    results: list[tuple[float, int, float]] = []  # (sent at, status, latency); status 0: lost, -1: client timeout
    open_now = 0
    skipped = 0
    start = time.perf_counter()

    async def one(i: int, sent_at: float) -> None:
        nonlocal open_now
        connection = Connection(url)
        open_now += 1
        try:
            status, _ = await asyncio.wait_for(connection.post("/score", bodies[i % len(bodies)]), client_timeout)
        except TimeoutError:
            status = -1
        except OSError:
            status = 0
        finally:
            open_now -= 1
            await connection.close()
        results.append((sent_at, status, time.perf_counter() - start - sent_at))

    tasks = []
    i = 0
    while (due := i / rate) < seconds:
        delay = due - (time.perf_counter() - start)
        if delay > 0:
            await asyncio.sleep(delay)
        if open_now >= max_open:  # the load generator's own file limit, not the server's answer
            skipped += 1
        else:
            tasks.append(asyncio.ensure_future(one(i, due)))
        i += 1
    await asyncio.gather(*tasks)
    statuses: dict[int, int] = {}
    for _, status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    ok = [latency for _, status, latency in results if status == 200]
    refused = [(sent, latency) for sent, status, latency in results if status == 429]
    sent = len(results)
    # Goodput: answers per second from the first request to the last answer (a backlog answered after the arrivals
    # stop takes that long too).
    span = max((at + latency for at, status, latency in results if status == 200), default=seconds)
    return {
        "offered_rps": rate,
        "seconds": seconds,
        "sent": sent,
        "skipped_open_limit": skipped,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "answered": len(ok),
        "span_s": span,
        "goodput_rps": len(ok) / span,
        "share_429": len(refused) / sent if sent else 0.0,
        "client_timeouts": statuses.get(-1, 0),
        "p50_s": percentile(ok, 0.5),
        "p99_s": percentile(ok, 0.99),
        "p99_429_s": percentile([latency for _, latency in refused], 0.99),
        "first_429_after_s": min((sent + latency for sent, latency in refused), default=float("nan")),
    }


def knee(url: str, prompts: list[str], completions: list[str], clients: int, requests: int) -> float:
    """Closed-loop capacity: requests/s with `clients` clients of one pair each."""
    result = asyncio.run(run_load(url, prompts, completions, clients, 1, requests))
    return float(result["pairs_per_s"])


def drained(url: str, limit: float = 300.0) -> None:
    """Wait until the server's queue is empty (the previous level's backlog must not count against the next)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and scrape(url).get("rm_queue_depth", 0.0) > 0:
        time.sleep(0.5)
    time.sleep(1.0)


def markdown(rows: list[dict[str, Any]], knee_rps: float) -> str:
    lines = [
        f"Knee (closed loop, 64 clients x 1 pair): {knee_rps:.1f} requests/s.",
        "",
        "| load | offered rps | sent | answered | goodput rps | 429 share | client timeouts | p50 s | p99 s | "
        "429 p99 s | first 429 after s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['multiple']:g}x | {r['offered_rps']:.0f} | {r['sent']} | {r['answered']} | {r['goodput_rps']:.1f} | "
            f"{r['share_429']:.0%} | {r['client_timeouts']} | {r['p50_s']:.2f} | {r['p99_s']:.2f} | "
            f"{r['p99_429_s']:.3f} | {r['first_429_after_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="Bundle to serve (started here); or --url for a running server.")
    parser.add_argument("--url", help="A server already running (e.g. another build, for a before/after).")
    parser.add_argument(
        "--server-args", default="", help="Extra `python -m service` flags, one string: '--max-queue-seconds 20'."
    )
    parser.add_argument("--knee", type=float, help="Requests/s the server sustains (default: measured here).")
    parser.add_argument("--multiples", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    parser.add_argument("--seconds", type=float, default=40.0, help="Arrivals per load level.")
    parser.add_argument("--client-timeout", type=float, default=120.0, help="A client gives up after this long.")
    parser.add_argument("--max-open", type=int, default=8000, help="The load generator's connection cap.")
    parser.add_argument("--json", type=Path, help="Write the rows here.")
    args = parser.parse_args(argv)
    if (args.bundle is None) == (args.url is None):
        parser.error("give exactly one of --bundle and --url")
    server = None
    if args.bundle is not None:
        server = ServiceServer(args.bundle, *shlex.split(args.server_args), capture=False)
        server.wait_ready()
    url = args.url or server.url  # type: ignore[union-attr]
    try:
        prompts, completions, source = data.sample(256)
        bodies = [
            json.dumps({"items": [{"prompt": p, "completion": c}]}).encode()
            for p, c in zip(prompts, completions, strict=True)
        ]
        knee_rps = args.knee or knee(url, prompts, completions, clients=64, requests=1024)
        rows = []
        for multiple in args.multiples:
            row = asyncio.run(
                open_loop(url, bodies, knee_rps * multiple, args.seconds, args.client_timeout, args.max_open)
            )
            rows.append({"multiple": multiple} | row)
            print(json.dumps(rows[-1]), flush=True)
            drained(url)
        print(f"pairs: {source}; client timeout {args.client_timeout:g} s")
        print(markdown(rows, knee_rps))
        if args.json:
            args.json.write_text(json.dumps({"knee_rps": knee_rps, "rows": rows}, indent=2))
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
