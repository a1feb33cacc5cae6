"""python -m bench.ab: two running servers (say, before and after a change) measured in alternating rounds of the
same closed-loop load, so the machine's drift (tens of percent over minutes here) cancels out of their ratio."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics

from . import data
from .load import run_load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="URL of server A (the baseline)")
    parser.add_argument("--b", required=True, help="URL of server B")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--pairs-per-request", type=int, default=1)
    parser.add_argument("--requests", type=int, default=384, help="Requests per server per round.")
    args = parser.parse_args(argv)
    prompts, completions, source = data.sample(256)
    rates: dict[str, list[float]] = {"a": [], "b": []}
    for r in range(args.rounds):
        order = ("a", "b") if r % 2 == 0 else ("b", "a")  # each goes first half of the time
        for name in order:
            result = asyncio.run(
                run_load(getattr(args, name), prompts, completions, args.clients, args.pairs_per_request, args.requests)
            )
            rates[name].append(float(result["pairs_per_s"]))
        print(f"round {r + 1}: A {rates['a'][-1]:.1f}, B {rates['b'][-1]:.1f} pairs/s", flush=True)
    ratios = [b / a for a, b in zip(rates["a"], rates["b"], strict=True)]
    summary = {
        "pairs": source,
        "a_pairs_per_s": rates["a"],
        "b_pairs_per_s": rates["b"],
        "median_ratio_b_over_a": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
