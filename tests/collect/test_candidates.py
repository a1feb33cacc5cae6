"""Candidate files: bad records refused with file:line and reason (or skipped and counted), duplicates merged."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from labelling import CLI

from collect.candidates import CandidateError, load_candidates

GOOD = {"prompt": "p", "completions": ["x", "y"]}


def write(path: Path, lines: list[object]) -> Path:
    path.write_bytes(b"".join(x if isinstance(x, bytes) else json.dumps(x).encode() + b"\n" for x in lines))
    return path


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"completions": ["x", "y"]}, "missing key 'prompt'"),
        ({"prompt": "q"}, "missing key 'completions'"),
        ({"prompt": 3, "completions": ["x", "y"]}, "'prompt' must be a string, got int"),
        ({"prompt": "q", "completions": ["x", 7]}, "'completions[1]' must be a string, got int"),
        ({"prompt": "q", "completions": "xy"}, "'completions' must be a list of strings"),
        ({"prompt": "q", "completions": ["same", "same", " "]}, "at least two distinct non-empty completions, has 1"),
        (b'{"prompt": "q", "completions": ["\xff\xfe"]}\n', "not valid UTF-8"),
        (b"{not json\n", "invalid JSON"),
        ([1, 2], "record must be an object, got list"),
    ],
)
def test_bad_record_is_refused_with_file_line_and_reason(tmp_path: Path, bad: object, reason: str) -> None:
    path = write(tmp_path / "c.jsonl", [GOOD, bad])
    with pytest.raises(CandidateError) as e:
        load_candidates([path])
    assert str(e.value).startswith(f"{path}:2: ") and reason in str(e.value)
    found = load_candidates([path], skip_invalid=True)
    assert list(found.completions) == ["p"] and sum(found.skipped.values()) == 1


def test_duplicate_prompts_are_merged_not_doubled(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.jsonl",
        [
            {"prompt": "p", "completions": ["x", "y"]},
            {"question": "p", "completions": ["y", "z"], "extra": 1},
            {"prompt": "中文?", "completions": ["好", "不好", "好"]},
        ],
    )
    found = load_candidates([path])
    assert found.completions == {"p": ["x", "y", "z"], "中文?": ["好", "不好"]}
    assert found.merged_prompts == 1 and found.pairs == 3 + 1


def test_cli_import_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", [GOOD, {"prompt": "q", "completions": ["only one"]}])
    cmd = [*CLI, "import", "--db", str(tmp_path / "l.sqlite"), "--candidates", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}:2: needs at least two distinct")
    result = subprocess.run([*cmd, "--skip-invalid"], capture_output=True, text=True)
    assert result.returncode == 0 and "1 records skipped" in result.stderr, result.stderr
