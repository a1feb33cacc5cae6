"""python -m bench.verifiers: verifier throughput (math and code samples/s), and a GRPO-shaped load with 1% hanging
answers — the service (verifiers in killable workers, a deadline per sample) against the naive in-process way
(math-verify called inline in the trainer, as TRL's accuracy_reward does), measured in one run.

The load: steps of 64 concurrent requests, each a group of 8 completions of one prompt (a GRPO group), 1% of them an
answer that makes sympy blow up. A step's time is when its last request is answered: what an RL step waits for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from service.launch import ServiceServer

HANGS = ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{(10^{10})!}", "\\boxed{2^{2^{2^{2^{2^{2^{2}}}}}}}"]


def groups(steps: int, requests: int, group: int, hang_share: float, seed: int = 0) -> list[list[list[dict[str, Any]]]]:
    """steps × requests × group items: arithmetic questions answered right, wrong or (hang_share) pathologically."""
    rng = random.Random(seed)
    out = []
    for _ in range(steps):
        step = []
        for _ in range(requests):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            items = []
            for _ in range(group):
                if rng.random() < hang_share:
                    answer = rng.choice(HANGS)
                else:
                    answer = f"The sum is \\boxed{{{a + b + rng.choice([0, 0, 1])}}}."
                items.append({"prompt": f"What is {a} + {b}?", "completion": answer, "reference": str(a + b)})
            step.append(items)
        out.append(step)
    return out


async def service_steps(url: str, steps: list[list[list[dict[str, Any]]]]) -> dict[str, Any]:
    latencies: list[float] = []
    step_times: list[float] = []
    failures = {"timeout": 0, "over_budget": 0}
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=128)) as http:
        for step in steps:
            started = time.perf_counter()

            async def one(items: list[dict[str, Any]]) -> None:
                t = time.perf_counter()
                r = await http.post("/score", json={"items": items})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)
                for failure in r.json()["failures"]["math"]:
                    if failure in failures:
                        failures[failure] += 1

            await asyncio.gather(*(one(items) for items in step))
            step_times.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "p50_s": latencies[len(latencies) // 2],
        "p99_s": latencies[int(0.99 * (len(latencies) - 1))],
        "step_s": statistics.median(step_times),
        "worst_step_s": max(step_times),
        "timeouts": failures["timeout"],
        "over_budget": failures["over_budget"],
    }


NAIVE = """
import json, sys, time
from math_verify import parse, verify
steps = json.load(open(sys.argv[1]))
threaded = sys.argv[2] == "thread"
def reward(item):
    # TRL's accuracy_reward: parse the gold and the completion, verify; math-verify's defaults on the main thread
    # (SIGALRM timeouts), or timeouts off in a worker thread as TRL does there.
    kw = {"parsing_timeout": None} if threaded else {}
    gold, answer = parse(item["reference"], **kw), parse(item["completion"], **kw)
    return float(verify(gold, answer, **({"timeout_seconds": None} if threaded else {})))
def run():
    out = []
    for step in steps:
        t = time.perf_counter()
        for request in step:
            for item in request:
                reward(item)
        out.append(time.perf_counter() - t)
        print(json.dumps({"step_s": out[-1]}), flush=True)
if threaded:
    import threading
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join()
else:
    run()
"""


def naive_steps(steps: list[list[list[dict[str, Any]]]], mode: str, limit: float) -> dict[str, Any]:
    """The naive way in a child process (so a frozen interpreter cannot take the benchmark with it), cut at `limit`."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "steps.json"
        data.write_text(json.dumps(steps))
        script = Path(folder) / "naive.py"
        script.write_text(NAIVE)
        started = time.perf_counter()
        error = None
        try:
            done = subprocess.run(
                [sys.executable, str(script), str(data), mode],
                capture_output=True,
                text=True,
                timeout=limit,
                preexec_fn=_cap_memory,
            )
            lines = done.stdout.splitlines()
            if done.returncode:
                error = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        except subprocess.TimeoutExpired as e:
            lines = (e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or "").splitlines()
        took = time.perf_counter() - started
    times = [json.loads(line)["step_s"] for line in lines if line.startswith("{")]
    return {
        "steps_done": len(times),
        "step_s": statistics.median(times) if times else None,
        "worst_step_s": max(times) if times else None,
        "wall_s": took,
        "cut_at_limit": len(times) < len(steps) and error is None,
        "error": error,
    }


def _cap_memory() -> None:
    # A hanging answer can also grow without bound (a tower of powers); 4 GiB keeps the naive run from taking the
    # machine with it. A trainer without the cap would be killed by the OOM killer instead of raising.
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


async def throughput(url: str, items: list[dict[str, Any]], concurrency: int) -> float:
    """Samples per second through /score, `concurrency` single-sample requests at a time."""
    queue = list(items)
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:

        async def worker() -> None:
            while queue:
                item = queue.pop()
                (await http.post("/score", json={"items": [item]})).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(items) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verifiers", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=64, help="Concurrent requests per step.")
    parser.add_argument("--group", type=int, default=8, help="Completions per request (a GRPO group).")
    parser.add_argument("--hang-share", type=float, default=0.01)
    parser.add_argument("--deadline", type=float, default=2.0, help="The math component's per-sample timeout.")
    parser.add_argument("--workers", type=int, default=2, help="Verifier worker processes.")
    parser.add_argument("--naive-limit", type=float, default=300.0, help="Cut a naive run after this many seconds.")
    parser.add_argument("--quick", action="store_true", help="A few-second smoke of the same code (the test suite).")
    parser.add_argument("--out", type=Path, help="Also write the result here as JSON.")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.requests, args.group, args.hang_share, args.naive_limit = 1, 4, 2, 0.3, 8.0
    with tempfile.TemporaryDirectory() as folder:
        recipe = Path(folder) / "recipe.yaml"
        recipe.write_text(f"components:\n  - kind: math\n    timeout: {args.deadline}\nbudget_seconds: 600\n")
        code_recipe = Path(folder) / "code.yaml"
        code_recipe.write_text("components:\n  - kind: code\n    timeout: 5\n")
        result: dict[str, Any] = {"machine": f"{__import__('os').cpu_count()} CPUs", "workers": args.workers}
        server = ServiceServer(
            None,
            "--reward-recipe",
            str(recipe),
            "--verifier-workers",
            str(args.workers),
            "--max-queue-seconds",
            "0",
            capture=False,
        )
        try:
            server.wait_ready()
            plain = [i for step in groups(1, 32 if args.quick else 256, 1, 0.0, seed=1) for r in step for i in r]
            result["math_samples_per_s"] = asyncio.run(throughput(server.url, plain, 16))
            steps = groups(args.steps, args.requests, args.group, args.hang_share)
            hangs = sum(i["completion"] in HANGS for s in steps for r in s for i in r)
            result["load"] = {"steps": args.steps, "requests": args.requests, "group": args.group, "hangs": hangs}
            result["service"] = asyncio.run(service_steps(server.url, steps))
        finally:
            server.stop()
        code = ServiceServer(None, "--reward-recipe", str(code_recipe), capture=False)
        try:
            code.wait_ready()
            program = "```python\ndef add(a, b):\n    return a + b\n```"
            item = {"prompt": "add", "completion": program, "reference": {"tests": ["assert add(1, 2) == 3"]}}
            result["code_samples_per_s"] = asyncio.run(throughput(code.url, [item] * (8 if args.quick else 64), 4))
        finally:
            code.stop()
    result["naive_main_thread"] = naive_steps(steps, "main", args.naive_limit)
    result["naive_worker_thread"] = naive_steps(steps, "thread", args.naive_limit)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result, args))
    return 0


def markdown(r: dict[str, Any], args: argparse.Namespace) -> str:
    def fmt(v: Any) -> str:
        return "—" if v is None else f"{v:.2f}"

    s, m, t = r["service"], r["naive_main_thread"], r["naive_worker_thread"]
    load = r["load"]
    return "\n".join(
        [
            f"Throughput: math {r['math_samples_per_s']:.1f} samples/s ({r['workers']} workers), code "
            f"{r['code_samples_per_s']:.1f} samples/s (4 sandboxed programs at a time).",
            f"Load: {load['steps']} steps x {load['requests']} concurrent requests x {load['group']} completions, "
            f"{load['hangs']} hanging answers; deadline {args.deadline:g} s.",
            "",
            "| way | step (median) s | worst step s | request p50 s | request p99 s | note |",
            "|---|---|---|---|---|---|",
            f"| service | {fmt(s['step_s'])} | {fmt(s['worst_step_s'])} | {fmt(s['p50_s'])} | {fmt(s['p99_s'])} | "
            f"{s['timeouts']} answered `timeout`, {s['over_budget']} `over_budget` |",
            f"| inline, main thread (math-verify's 5 s SIGALRM timeouts) | {fmt(m['step_s'])} | "
            f"{fmt(m['worst_step_s'])} | — | — | {naive_note(m, load['steps'], args.naive_limit)} |",
            f"| inline, worker thread (timeouts off, as TRL does there) | {fmt(t['step_s'])} | "
            f"{fmt(t['worst_step_s'])} | — | — | {naive_note(t, load['steps'], args.naive_limit)} |",
        ]
    )


def naive_note(r: dict[str, Any], steps: int, limit: float) -> str:
    note = f"{r['steps_done']} of {steps} steps in {r['wall_s']:.0f} s"
    if r["error"]:
        return f"{note}, then crashed: `{r['error'][:80]}`"
    return note + (f", cut at the {limit:g} s limit" if r["cut_at_limit"] else "")


if __name__ == "__main__":
    raise SystemExit(main())
