"""python -m bench: the ceiling, the service under load and the peers, measured side by side in one run.

Everything is compared only within this run (the machine is shared and noisy): each figure is the median of
`--repeats` runs, thread counts are set explicitly, and the results go to JSON, a Markdown table and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.bundle import read_bundle
from service.launch import Server, ServiceServer, free_port

from . import data
from .load import paired_latency, run_load
from .offline import (
    cross_encoder_offline,
    forward_flops_per_token,
    ort_offline,
    ort_pass,
    peak_flops,
    torch_offline,
)
from .queue import queue_scaling_alone


def measure_servers(
    servers: dict[tuple[str, str], Server],
    prompts: list[str],
    completions: list[str],
    args: argparse.Namespace,
    ceilings: dict[tuple[str, str], Callable[[], float]],
) -> list[dict[str, Any]]:
    """Load rows for every (clients, pairs per request) and every server, keyed (name, precision).

    The servers run side by side, idle while another is measured, and each repeat measures them in turn, so a
    ratio between two servers compares runs seconds apart. Where `ceilings` has the server, the offline ceiling
    is re-measured right before each of its load runs too. (This VM's speed drifts by tens of percent over the
    minutes a section takes: figures from separate sections do not compare.)
    """
    rows = []
    for clients in args.clients:
        for k in args.pairs_per_request:
            # Every client sends at least one request, and each measurement covers at least --min-pairs pairs.
            requests = max(clients, -(-args.min_pairs // k))
            runs: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in servers}
            beside: dict[tuple[str, str], list[float]] = {key: [] for key in servers}
            for _ in range(args.repeats):
                for key, server in servers.items():
                    if key in ceilings:
                        beside[key].append(ceilings[key]())
                    load = run_load(
                        server.url, prompts, completions, clients, k, requests, with_metrics=key[0] == "service"
                    )
                    runs[key].append(asyncio.run(load))
            for (name, precision), measured in runs.items():
                best = sorted(measured, key=lambda r: r["pairs_per_s"])[len(measured) // 2]
                if beside[(name, precision)]:
                    best["ceiling_pairs_per_s"] = statistics.median(beside[(name, precision)])
                rows.append({"server": name, "precision": precision, **best})
                print(
                    f"  {name:>8} {precision} clients={clients:>3} pairs/request={k:>2}: {best['pairs_per_s']:7.1f} "
                    f"pairs/s p50 {best['p50_ms']:7.1f} ms p99 {best['p99_ms']:7.1f} ms {best['statuses']}",
                    flush=True,
                )
    return rows


def request_scaling(url: str, args: argparse.Namespace) -> dict[str, float]:
    """Cost of one big request vs many small ones from one client: no step may be quadratic in request size.

    Both halves score the same pairs (a sample of their own, as large as the big request, so no pair repeats
    inside it): the big request sends them at once, the small ones in order. Small and big alternate, one round
    per repeat, so both halves see the same machine speed.
    """
    big = 512 if not args.quick else 64
    small = 16 if not args.quick else 4
    prompts, completions, _ = data.sample(big, seed=1)
    big = len(prompts)  # the shared files may hold fewer distinct pairs than asked for
    smalls, bigs = [], []
    for _ in range(args.repeats):
        smalls.append(asyncio.run(run_load(url, prompts, completions, 1, small, big // small))["elapsed_s"])
        bigs.append(asyncio.run(run_load(url, prompts, completions, 1, big, 1))["elapsed_s"])
    t_small, t_big = statistics.median(smalls), statistics.median(bigs)
    return {
        "small_pairs": small,
        "big_pairs": big,
        "small_requests": big // small,
        "small_total_ms": t_small * 1000,
        "big_ms": t_big * 1000,
        "ratio": t_big / t_small * (big // small * small) / big,
    }


def ceiling_pass(
    bundle: Any, precision: str, encoded: list[Any], batch: int, args: argparse.Namespace
) -> Callable[[], float]:
    """One offline pass over the sample at the ceiling's best batch size, as `ort_offline` runs it: pairs/s."""
    from models.runtime import BundleScorer

    one_pass = ort_pass(BundleScorer(bundle, precision, device="auto", intra_op_threads=args.threads), encoded, batch)
    one_pass()  # warm-up

    def run() -> float:
        started = time.perf_counter()
        one_pass()
        return len(encoded) / (time.perf_counter() - started)

    return run


def latency_overhead(
    url: str, bundle: Any, precision: str, prompts: list[str], completions: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """1 client x 1 pair: each request paired with the same pair scored offline (same graph, threads, no spinning
    as the server), so the median difference is what serving adds."""
    from models.runtime import BundleScorer

    scorer = BundleScorer(bundle, precision, device="auto", intra_op_threads=args.threads, spin=False)
    encoded = scorer.encode(prompts, completions)
    latency = paired_latency(
        url,
        prompts,
        completions,
        lambda i: scorer.run([encoded[i]]),
        args.repeats,
        tokenize_offline=lambda i: scorer.encode([prompts[i]], [completions[i]]),
    )
    print(
        f"  1 client x 1 pair: service p50 {latency['p50_ms']:.1f} ms, offline p50 {latency['offline_p50_ms']:.1f}"
        f" ms, paired overhead {latency['overhead_ms']:.1f} ms (httpx client {latency['overhead_httpx_ms']:.1f} ms;"
        f" tokenising {latency['tokenize_p50_ms']:.1f} ms; beyond it {latency['overhead_beyond_tokenize_ms']:.1f} ms)",
        flush=True,
    )
    return latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="bundles/default", help="Bundle to benchmark.")
    parser.add_argument(
        "--torch-model", help="HF folder of the same model for the torch peers (default BUNDLE.work/hf)."
    )
    parser.add_argument("--pairs", type=int, default=256, help="Pairs in the fixed sample.")
    parser.add_argument("--threads", type=int, default=2, help="Threads for every runtime (set explicitly).")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--pairs-per-request", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--min-pairs", type=int, default=256, help="Pairs per load measurement, at least.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"], help="Offline precisions.")
    parser.add_argument("--server-precisions", nargs="+", help="Service precisions (default: the service's default).")
    parser.add_argument("--no-peers", action="store_true", help="Skip the torch peers (offline and naive server).")
    parser.add_argument("--out", default="docs/bench", help="Prefix for OUT.json, OUT.md and OUT.png.")
    parser.add_argument("--quick", action="store_true", help="A few-second smoke run (tiny sample, one repeat).")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.repeats, args.batch_sizes = 16, 1, [1, 4]
        args.clients, args.pairs_per_request, args.min_pairs = [1, 8], [1, 4], 16
        args.server_precisions = args.server_precisions or ["fp32", "int8"]

    bundle = read_bundle(args.bundle)
    torch_model = Path(args.torch_model or f"{Path(args.bundle).resolve()}.work/hf")
    prompts, completions, source = data.sample(args.pairs, seed=0)
    result: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "threads": args.threads,
        },
        "bundle": bundle.meta.model_id,
        "pairs": len(prompts),
        "source": source,
        "args": vars(args),
    }
    print(f"benchmark: {len(prompts)} pairs from {source}; {args.threads} threads", flush=True)

    offline = []
    for precision in [p for p in args.precisions if p in bundle.meta.precisions]:
        offline += ort_offline(bundle, prompts, completions, precision, args.batch_sizes, args.threads, args.repeats)
    if not args.no_peers and torch_model.is_dir():
        offline += torch_offline(
            torch_model, bundle, prompts, completions, args.batch_sizes, args.threads, args.repeats
        )
        if bundle.meta.architecture == "encoder":  # sentence-transformers' CrossEncoder scores text pairs only
            offline += cross_encoder_offline(
                torch_model, bundle, prompts, completions, args.batch_sizes, args.threads, args.repeats
            )
    for row in offline:
        print(f"  offline {row['runtime']:>18} batch {row['batch']:>3}: {row['pairs_per_s']:7.1f} pairs/s", flush=True)
    result["offline"] = offline

    from models.runtime import BundleScorer

    encoded = BundleScorer(bundle, "fp32", device="cpu").encode(prompts, completions)
    mean_tokens = sum(len(e) for e in encoded) / len(encoded)
    flops = forward_flops_per_token(bundle, mean_tokens)
    peak, derivation = peak_flops(args.threads)
    result["flops"] = {"per_token": flops, "mean_tokens": mean_tokens, "peak": peak, "peak_derivation": derivation}

    server_precisions = args.server_precisions or ["int8" if "int8" in bundle.meta.precisions else "fp32"]
    server_precisions = [p for p in server_precisions if p in bundle.meta.precisions]
    running: dict[tuple[str, str], Server] = {}
    ceilings: dict[tuple[str, str], Callable[[], float]] = {}
    try:
        for precision in server_precisions:
            env = {"RM_INTRA_OP_THREADS": str(args.threads), "RM_PRECISION": precision, "RM_LOG_LEVEL": "warning"}
            running[("service", precision)] = ServiceServer(args.bundle, env=env, capture=False).wait_ready()
            rows = [r for r in offline if r["runtime"] == f"ORT {precision}"]
            batch = max(rows, key=lambda r: r["pairs_per_s"])["batch"] if rows else 4
            ceilings[("service", precision)] = ceiling_pass(bundle, precision, encoded, batch, args)
        if not args.no_peers and torch_model.is_dir():
            port = free_port()
            command = [sys.executable, "-m", "bench.naive_server", "--model", str(torch_model), "--bundle"]
            command += [args.bundle, "--port", str(port), "--threads", str(args.threads)]
            running[("naive", "fp32")] = Server(command, port, capture=False).wait_ready("/healthz")
        servers = measure_servers(running, prompts, completions, args, ceilings)
        if server_precisions:
            first = running[("service", server_precisions[0])]
            result["scaling"] = request_scaling(first.url, args)
            result["queue"] = queue_scaling_alone(512, 8192 if not args.quick else 2048, args.repeats)
            result["latency"] = latency_overhead(first.url, bundle, server_precisions[0], prompts, completions, args)
    finally:
        for server in running.values():
            server.stop()
    result["servers"] = servers
    result["accuracy"] = {p: bundle.meta.eval_metrics.get(p, {}).get("overall") for p in bundle.meta.precisions}
    result["int8"] = bundle.meta.parity.int8

    from .report import write_report

    write_report(result, Path(args.out))
    print(f"wrote {args.out}.json, {args.out}.md, {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
