"""A bounded soak: concurrent clients mixing valid and invalid requests; every answer checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_short_soak_has_no_unexpected_errors_or_wrong_scores(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.soak",
        "--bundle",
        str(tiny_bundle),
        "--seconds",
        "15",
        "--warmup",
        "4",
        "--clients",
        "64",
        "--queue",
        "32",
        "--json",
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    report = json.loads(out.read_text())
    assert result.returncode == 0, report
    assert report["wrong_scores"] == 0 and report["unexpected_count"] == 0
    assert report["statuses"].get("valid->200", 0) > 100
    assert report["statuses"].get("valid->429", 0) > 0  # the overload path was exercised
    assert any(key.startswith("invalid->4") for key in report["statuses"])
    assert report["rss_growth"] < 0.10
