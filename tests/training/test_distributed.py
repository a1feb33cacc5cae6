"""Data-parallel fits for real: `torchrun --nproc_per_node 2` on CPU (gloo), a tiny model, a few steps."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from accelerate.data_loader import BatchSamplerShard
from builders import tiny_fit_argv

from models.bundle import MODEL_FILES, read_bundle
from training.config import parse_config
from training.export import export_bundle
from training.fit import TrainResult, export_job, load_splits
from training.model import RewardModel, load_backbone
from training.trainer import PromptBatches


def torchrun(argv: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([*cmd, "-m", "training.fit", *argv], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_share_each_epoch_exactly(world_size: int) -> None:
    groups = [[i] for i in range(37)] + [[37, 38, 39], [40, 41]]  # single pairs and multi-pair prompts
    widths = [5 + (i * 7) % 40 for i in range(42)]
    samplers = [PromptBatches(groups, widths, 4, seed=3, rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(s) for s in samplers}) == 1  # every rank takes the same number of steps
    for epoch in range(3):
        seen: list[int] = []
        for s in samplers:
            s.set_epoch(epoch)
            seen += [i for batch in s for i in batch]
        assert sorted(seen) == list(range(42))  # disjoint, and together every pair once


def test_accelerates_own_sharding_would_repeat_pairs() -> None:
    """Why the loader is not handed to accelerate: its shard assumes equal batches and pads the last round."""
    batches = PromptBatches([[i] for i in range(10)], [8] * 10, 4)  # batches of 4, 4, 2
    seen = [i for r in range(2) for b in BatchSamplerShard(batches, 2, r) for i in b]
    assert sorted(seen) != list(range(10))


def test_torchrun_two_processes_fit_export_and_resume(tiny_bert: Path, synthetic_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    argv = tiny_fit_argv(tiny_bert, synthetic_data, out, epochs=2, save_steps=4)
    run = torchrun(argv)
    assert run.returncode == 0, run.stderr[-3000:]
    bundle = read_bundle(out)
    summary = bundle.meta.training["summary"]
    shared = summary["data_parallel"]
    assert shared["world_size"] == 2 and shared["full_epochs_checked"] == [0, 1]
    assert shared["each_pair_once_per_epoch"] is True
    counts = shared["pairs_per_rank"]
    assert all(counts[0][e] > 0 and counts[1][e] > 0 for e in ("0", "1"))

    # Parity: the same final weights exported in one process give the very same graphs.
    cfg, options = parse_config(tiny_fit_argv(tiny_bert, synthetic_data, tmp_path / "single", epochs=2))
    model, tokenizer, architecture = load_backbone(str(out) + ".work/hf")
    reward_model: Any = RewardModel(model, architecture, summary["pooling"])
    train_pairs, held_out = load_splits(cfg)
    spec = bundle.meta.formatting
    described = {f.name: summary[f.name] for f in dataclasses.fields(TrainResult) if f.name in summary}
    trained = TrainResult(model=reward_model, tokenizer=tokenizer, spec=spec, **described)
    single = export_bundle(export_job(cfg, options, trained, train_pairs, held_out, summary["data_fingerprint"]))
    for precision in bundle.meta.precisions:
        name = MODEL_FILES[precision]
        assert single.meta.files[name] == bundle.meta.files[name], precision
    assert single.meta.eval_metrics["fp32"] == bundle.meta.eval_metrics["fp32"]

    resumed = torchrun([*argv, "--epochs", "3", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = read_bundle(out).meta.training["summary"]
    assert again["resumed_from"] and again["steps"] > summary["steps"]
    assert again["data_parallel"]["full_epochs_checked"] == [2]
    assert again["data_parallel"]["each_pair_once_per_epoch"] is True


def test_a_rank_that_crashes_mid_fit_leaves_no_bundle(tiny_bert: Path, synthetic_data: Path, tmp_path: Path) -> None:
    """SIGKILL rank 1 once the fit has saved its first checkpoint: the launcher fails and no bundle is written."""
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "crash"
    argv = tiny_fit_argv(tiny_bert, synthetic_data, out, epochs=40, save_steps=2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen([*cmd, "-m", "training.fit", *argv], env=env, stderr=subprocess.PIPE, text=True)
    try:
        checkpoints = Path(str(out) + ".work") / "checkpoints"
        deadline = time.monotonic() + 240
        while not (checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))):
            assert launcher.poll() is None and time.monotonic() < deadline, "the fit ended before its first checkpoint"
            time.sleep(0.05)
        [rank1] = [p for p in psutil.Process(launcher.pid).children(recursive=True) if p.environ().get("RANK") == "1"]
        rank1.kill()
        _, stderr = launcher.communicate(timeout=240)
    finally:
        launcher.kill()
    assert launcher.returncode != 0, "the launcher must report the crash"
    assert not (out / "reward_model.json").exists(), stderr[-2000:]
    assert "checkpoint-" in " ".join(p.name for p in checkpoints.iterdir())  # it did crash mid-fit
