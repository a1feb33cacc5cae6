"""collect.generate on tiny random causal LMs: N distinct answers per prompt, seeded, resumable, chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collect.candidates import load_candidates
from collect.generate import main

PROMPTS = ["tell me about bread", "tell me about rivers", "tell me about tea", "tell me about bread"]


def run(model: Path, prompts: Path, out: Path, *extra: str) -> int:
    argv = ["--model", str(model), "--prompts", str(prompts), "--out", str(out), "--n", "3"]
    return main([*argv, "--max-new-tokens", "12", "--threads", "1", *extra])


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


def test_generates_distinct_answers_deterministically_and_the_file_loads(
    tiny_gpt2_lm: Path, prompts_file: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert run(tiny_gpt2_lm, prompts_file, first) == 0
    assert run(tiny_gpt2_lm, prompts_file, second) == 0
    assert first.read_bytes() == second.read_bytes()  # same seed: same candidates
    found = load_candidates([first])
    assert list(found.completions) == PROMPTS[:3]  # the duplicate prompt once
    assert all(len(c) == 3 for c in found.completions.values())
    assert run(tiny_gpt2_lm, prompts_file, tmp_path / "other.jsonl", "--seed", "1") == 0
    assert (tmp_path / "other.jsonl").read_bytes() != first.read_bytes()


def test_resume_after_a_kill_gives_the_uninterrupted_result(
    tiny_gpt2_lm: Path, prompts_file: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole.jsonl"
    assert run(tiny_gpt2_lm, prompts_file, whole) == 0
    lines = whole.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(lines[0] + lines[1][:20])  # killed while writing the second line
    assert run(tiny_gpt2_lm, prompts_file, cut) == 0
    assert cut.read_bytes() == whole.read_bytes()


def test_chat_template_model_and_json_prompts(tiny_llama_lm: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"question": "什么是列表？", "chosen": "x", "rejected": "y"}]), encoding="utf-8")
    out = tmp_path / "c.jsonl"
    assert run(tiny_llama_lm, prompts, out) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["prompt"] == "什么是列表？" and len(record["completions"]) == 3


def test_bad_prompts_file_is_one_line(tiny_gpt2_lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": 5}\n', encoding="utf-8")
    assert run(tiny_gpt2_lm, bad, tmp_path / "c.jsonl") == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}:line 2: needs a non-empty string 'prompt' (or 'question')"
    good = tmp_path / "p.txt"
    good.write_text("hello\n", encoding="utf-8")
    assert run(tmp_path / "nope", good, tmp_path / "c2.jsonl") == 2
    assert "no such model folder" in capsys.readouterr().err
