"""The benchmark runs end to end as a quick smoke (tiny sample, real servers), so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_quick_benchmark_runs_and_reports(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--bundle", str(tiny_bundle), "--out", str(out)],
        check=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    result = json.loads(Path(f"{out}.json").read_text())
    runtimes = {r["runtime"] for r in result["offline"]}
    assert runtimes == {"ORT fp32", "ORT int8", "torch eager fp32", "CrossEncoder fp32"}
    servers = {(r["server"], r["precision"]) for r in result["servers"]}
    assert servers == {("service", "fp32"), ("service", "int8"), ("naive", "fp32")}
    assert all(r["statuses"] == {"200": r["requests"]} for r in result["servers"])
    assert all(r["ceiling_pairs_per_s"] > 0 for r in result["servers"] if r["server"] == "service")
    assert result["scaling"]["ratio"] > 0 and result["targets"]
    latency = result["latency"]
    assert latency["samples"] == result["pairs"] and latency["p50_ms"] > 0 and latency["offline_p50_ms"] > 0
    assert latency["tokenize_p50_ms"] > 0 and "overhead_beyond_tokenize_ms" in latency
    assert Path(f"{out}.png").read_bytes()[:4] == b"\x89PNG"
    assert "| target | measured | threshold | holds |" in Path(f"{out}.md").read_text()


def test_quick_verifier_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """bench.verifiers end to end on a few samples: hanging answers are answered `timeout` at the deadline by the
    service, while the naive in-process way is still stuck when its limit cuts it."""
    out = tmp_path / "verifiers.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.verifiers", "--quick", "--out", str(out)],
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    result = json.loads(out.read_text())
    assert result["math_samples_per_s"] > 0 and result["code_samples_per_s"] > 0
    service = result["service"]
    assert result["load"]["hangs"] >= 1 and service["timeouts"] == result["load"]["hangs"]
    assert service["over_budget"] == 0 and service["worst_step_s"] < 2.0 + 1.5
    assert result["naive_worker_thread"]["steps_done"] == 0  # a hang in a thread has no timeout
    assert "| service |" in done.stdout
