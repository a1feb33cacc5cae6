"""The whole loop on tiny models: generate candidates, annotate through the app, export, fit, hot-reload the service."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import httpx
from builders import TOPICS, tiny_fit_argv
from labelling import ADMIN as COLLECT_ADMIN
from labelling import CLI, start_server
from servers import LiveServer, free_port

from collect.generate import main as generate
from models.bundle import read_bundle

ADMIN = {"Authorization": "Bearer reload-key"}  # the reward service's admin key (tests/collect/conftest.py)


def annotate(url: str, token: str, rule: str, seed: int) -> int:
    """A scripted annotator: `longer` prefers the longer answer (a consistent human), `random` clicks anything."""
    rng = random.Random(seed)
    answered = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        while not (shown := http.get("/api/next").json())["done"]:
            a, b = shown["pair"]["a"], shown["pair"]["b"]
            if rule == "random":
                choice = rng.choice(["A", "B"])
            else:
                choice = "tie" if len(a) == len(b) else ("A" if len(a) > len(b) else "B")
            body = {"assignment_id": shown["pair"]["assignment_id"], "choice": choice}
            assert http.post("/api/answer", json=body).status_code == 200
            answered += 1
    return answered


def test_generate_annotate_export_fit_reload(
    tiny_gpt2_lm: Path, tiny_bert: Path, tiny_bundle: Path, reward_service: LiveServer, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Question {i}: tell me something about {t}.\n" for i, t in enumerate(TOPICS[:8])))
    cands = tmp_path / "candidates.jsonl"
    argv = ["--model", str(tiny_gpt2_lm), "--prompts", str(prompts), "--out", str(cands), "--n", "4"]
    assert generate([*argv, "--max-new-tokens", "16", "--threads", "1"]) == 0

    db, port = tmp_path / "labels.sqlite", free_port()
    server = start_server(
        db, port, 3, "--candidates", str(cands), "--strategy", "uncertain", "--reward-url", reward_service.url
    )
    try:
        tokens = {}
        for name in ("ann", "bob", "eve"):
            issued = subprocess.run([*CLI, "add-annotator", name, "--db", str(db)], capture_output=True, text=True)
            tokens[name] = issued.stdout.strip()
        url = f"http://127.0.0.1:{port}"
        counts = [annotate(url, tokens[n], "random" if n == "eve" else "longer", i) for i, n in enumerate(tokens)]
        assert counts == [48, 48, 48]  # 8 prompts x 6 pairs, each to all three annotators
        stats = httpx.get(url + "/api/admin/stats", headers={"Authorization": f"Bearer {COLLECT_ADMIN}"}).json()
        assert stats["progress"]["fraction"] == 1.0 and stats["strategy"]["degraded"] is None
    finally:
        server.terminate()
        server.wait(10)

    prefs, report_file = tmp_path / "prefs.json", tmp_path / "report.json"
    cmd = [*CLI, "export", "--db", str(db), "--format", "tutorial", "--out", str(prefs), "--report", str(report_file)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    report = json.loads(report_file.read_text())
    assert report["annotators"][0]["name"] == "eve"  # the careless annotator agrees least with the others
    assert report["pairs_decided"] >= 40 and report["krippendorff_alpha"] is not None

    bundle = tmp_path / "bundle"
    fit = tiny_fit_argv(tiny_bert, prefs, bundle, epochs=1, max_length=32, int8=False, fp16=False, threads=1)
    result = subprocess.run([sys.executable, "-m", "training.fit", *fit], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]

    new_id = read_bundle(bundle).meta.model_id
    try:
        reload = httpx.post(
            reward_service.url + "/admin/reload", json={"model_dir": str(bundle)}, headers=ADMIN, timeout=120
        )
        assert reload.status_code == 200, reload.text
        assert httpx.get(reward_service.url + "/info").json()["model_id"] == new_id
        compared = httpx.post(reward_service.url + "/compare", json={"prompt": "p", "completions": ["a", "bb"]})
        assert compared.status_code == 200
    finally:  # the service is shared by the session: give it its own bundle back
        httpx.post(
            reward_service.url + "/admin/reload", json={"model_dir": str(tiny_bundle)}, headers=ADMIN, timeout=120
        )
