"""Startup, inference and training faults, each against real processes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from builders import BOOM, rewrite_bundle, tiny_fit_argv
from servers import LiveServer

from models.bundle import META_FILE, MODEL_FILES, read_bundle


def start(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True, timeout=120)


def test_startup_faults_exit_nonzero_with_one_line(tiny_bundle: Path, tmp_path: Path) -> None:
    cases = {}
    cases["missing"] = tmp_path / "missing"
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_bundle, corrupt)
    with open(corrupt / MODEL_FILES["fp32"], "r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 16)
    cases["corrupt"] = corrupt
    incompatible = tmp_path / "incompatible"
    shutil.copytree(tiny_bundle, incompatible)
    meta = json.loads((incompatible / META_FILE).read_text())
    (incompatible / META_FILE).write_text(json.dumps(meta | {"schema_version": 99}))
    cases["incompatible"] = incompatible
    # Hashes that match but a graph ONNX Runtime refuses: the contract holds, the model does not.
    bad_graph_src = tmp_path / "bad-graph-src"
    bad_graph_src.mkdir()
    (bad_graph_src / "model.onnx").write_bytes(b"not an onnx graph")
    # (int8/fp16 probe rewards stay in the metadata, unused.)
    bad = {"model.onnx": bad_graph_src / "model.onnx"}
    cases["bad-graph"] = rewrite_bundle(tiny_bundle, tmp_path / "bad-graph", bad, precisions=["fp32"])
    # A sound graph whose recorded probe rewards this runtime does not reproduce (as after a runtime upgrade).
    reference = read_bundle(tiny_bundle).meta.reference
    assert reference is not None
    shifted = dataclasses.replace(reference, rewards={"fp32": [r + 1.0 for r in reference.rewards["fp32"]]})
    cases["drifted"] = rewrite_bundle(tiny_bundle, tmp_path / "drifted", precisions=["fp32"], reference=shifted)
    expected = {
        "missing": "not a model bundle folder",
        "corrupt": "corrupt or was replaced",
        "incompatible": "unknown schema_version 99",
        "bad-graph": "cannot be loaded",
        "drifted": "does not reproduce the exported scores",
    }
    for name, path in cases.items():
        result = start(["--model-dir", str(path), "--port", "0"])
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot serve:"), (name, result.stderr)
        assert expected[name] in lines[0], (name, lines[0])
    bad_setting = start(["--model-dir", str(tiny_bundle), "--max-batch-size", "zero"])
    assert bad_setting.returncode == 2 and "max_batch_size" in bad_setting.stderr


def test_a_failing_batch_fails_alone_and_the_queue_keeps_running(faulty_bundle: Path) -> None:
    env = {**os.environ, "RM_MAX_BATCH_SIZE": "1", "RM_PRECISION": "fp32"}
    server = LiveServer(faulty_bundle, env=env)
    try:
        server.wait_ready()

        async def main() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                good = [
                    http.post("/score", json={"items": [{"prompt": f"q{i}", "completion": "fine"}]}) for i in range(20)
                ]
                bad = [
                    http.post("/score", json={"items": [{"prompt": "q", "completion": f"{BOOM} {i}"}]})
                    for i in range(5)
                ]
                return list(await asyncio.gather(*good, *bad))

        responses = asyncio.run(main())
        assert [r.status_code for r in responses[:20]] == [200] * 20
        for r in responses[20:]:
            assert r.status_code == 500 and r.json()["type"] == "inference_failed"
        assert (
            httpx.post(server.url + "/score", json={"items": [{"prompt": "p", "completion": "c"}]}).status_code == 200
        )
        assert "rm_batch_errors_total 5.0" in httpx.get(server.url + "/metrics").text
    finally:
        server.stop()


def test_killed_fit_leaves_no_bundle_and_resume_finishes(tiny_bert: Path, synthetic_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    fit = tiny_fit_argv(
        tiny_bert, synthetic_data, out, max_length=32, batch_size=8, save_steps=10, int8=False, epochs=40
    )
    base = [sys.executable, "-m", "training.fit", *fit]
    proc = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = Path(f"{out}.work") / "checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(checkpoints.glob("checkpoint-*")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(checkpoints.glob("checkpoint-*")), "no checkpoint was written before the kill"
    assert not out.exists() and not list(tmp_path.glob(".killed.partial*"))
    done = subprocess.run([*base, "--resume"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = read_bundle(out).meta.training["summary"]
    assert summary["resumed_from"] and "checkpoint-" in summary["resumed_from"]
