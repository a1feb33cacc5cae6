"""The benchmark's pairs: a fixed, seeded sample mixing the shared preference files (synthetic text without them)."""

from __future__ import annotations

import random
from pathlib import Path

from training.data import LoadReport, load_pairs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "preferences"
FILES = ("hh_rlhf_harmless_base_test.jsonl.gz", "pandalm_test.jsonl", "finegrained_qa_dev.jsonl.gz")


def shared_files(data_dir: Path = SHARED) -> list[Path]:
    return [data_dir / f for f in FILES if (data_dir / f).exists()]


def sample(n: int, seed: int = 0, data_dir: Path = SHARED) -> tuple[list[str], list[str], str]:
    """n (prompt, completion) pairs drawn evenly from each file, shuffled with a fixed seed; and their source."""
    rng = random.Random(seed)
    files = shared_files(data_dir)
    if not files:
        words = ["the", "a", "reward", "model", "scores", "answers", "quickly", "and", "well", "for", "every", "prompt"]
        prompts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 120))) for _ in range(n)]
        completions = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 80))) for _ in range(n)]
        return prompts, completions, "synthetic (shared data not found)"
    chosen: list[tuple[str, str]] = []
    for i, path in enumerate(files):
        pairs = load_pairs([path], skip_invalid=True, report=LoadReport())
        take = n // len(files) + (1 if i < n % len(files) else 0)
        for pair in rng.sample(pairs, min(take, len(pairs))):
            completion = pair.chosen if rng.random() < 0.5 else pair.rejected
            chosen.append((str(pair.prompt), str(completion)))
    rng.shuffle(chosen)
    return [p for p, _ in chosen], [c for _, c in chosen], ", ".join(f.name for f in files)
