"""The container's install script works in a fresh virtual environment (CI cannot build the image itself)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serving_install_has_no_torch(tmp_path: Path) -> None:
    # Install from a copy of the source, as the image build does, so pip's build/ never lands in the checkout.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "bundles", "runs", "*.egg-info", "*cache*", "*.onnx")
    shutil.copytree(ROOT, src, ignore=skip)
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["sh", str(src / "deploy" / "install.sh"), str(venv), "serve"], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    check = "import importlib.util as u; assert u.find_spec('torch') is None and u.find_spec('transformers') is None"
    subprocess.run([str(venv / "bin" / "python"), "-c", check], check=True)
    help_text = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "service", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--model-dir" in help_text
