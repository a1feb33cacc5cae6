"""Acceptance checks of exported graphs, each returning a value and mutating nothing; training.export decides.

ONNX fp32 against the torch model it was traced from (parity), int8 winners against fp32's (the screen and the
agreement), fp16 rewards against fp32's (the tolerance), and int8 speed against fp32 (whether serving it pays).
Every check scores through models.runtime.BundleScorer, the service's own code path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.batching import plan_batches
from models.formatting import Encoded, dedupe
from models.records import Fp16Check
from models.runtime import BundleScorer

from .data import PreferencePair
from .evaluate import encode_pairs, score_pairs
from .inputs import pad_batch
from .model import RewardModel

SCREEN_CHUNK = 64  # pairs in the first look at how many winners int8 flipped (each next look doubles it)


@dataclass(frozen=True)
class Parity:
    """Largest |ONNX fp32 - torch| reward over `texts` real texts."""

    max_abs: float
    texts: int


def check_parity(scorer: BundleScorer, model: RewardModel, pairs: Sequence[PreferencePair], pad_id: int) -> Parity:
    """ONNX fp32 (through the service's scorer) against torch, on the pairs' chosen and rejected texts."""
    encoded = encode_pairs(scorer, pairs)
    want = torch_rewards(model, encoded, pad_id)
    got = scorer.score_encoded(encoded)
    return Parity(float(np.max(np.abs(want - got), initial=0.0)), len(encoded))


def check_fp16(fp32: BundleScorer, fp16: BundleScorer, pairs: Sequence[PreferencePair], limit: float) -> Fp16Check:
    """fp16 against fp32 on the pairs. Checked on CPU, where fp16 is slow but computes the same graph; the service
    re-checks it on its own device against the reference probes."""
    want, got = (np.concatenate(score_pairs(s, pairs)[:2]) for s in (fp32, fp16))
    return Fp16Check(float(np.max(np.abs(got - want), initial=0.0)), limit, 2 * len(pairs))


def torch_rewards(model: RewardModel, encoded: Sequence[Encoded], pad_id: int, batch: int = 8) -> np.ndarray:
    """Rewards from the torch model (fp32, eval mode) for the parity check."""
    out = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch):
            inputs = pad_batch(encoded[start : start + batch], pad_id)
            types = inputs["token_type_ids"] if model.uses_token_types else None
            out.append(model(inputs["input_ids"], inputs["attention_mask"], types).float().numpy())
    return np.concatenate(out)


def screen_int8(
    scorer: BundleScorer,
    pairs: Sequence[PreferencePair],
    fp32: Mapping[str, np.ndarray],
    min_agreement: float,
    chunk: int = SCREEN_CHUNK,
) -> tuple[dict[str, np.ndarray] | None, int, int]:
    """(int8 rewards of every pair, or None once it cannot reach `min_agreement`; winners flipped; pairs scored).

    Pairs are scored in chunks of doubling size, those fp32 finds closest first: they are the ones quantisation
    flips, so a scheme that fails usually fails within its first chunks. Each distinct text runs once, as in
    score_pairs, and static int8 is batch-invariant, so the rewards are exactly a full evaluation's. The stop
    rule is the final check's own formula: (pairs - flipped) / pairs < min_agreement.
    """
    n = len(pairs)
    distinct, index = dedupe(encode_pairs(scorer, pairs))
    text_of = np.asarray(index, dtype=np.int64).reshape(2, n)  # [0]: each pair's chosen text, [1]: its rejected
    rewards = np.zeros(len(distinct), dtype=np.float32)
    done = np.zeros(len(distinct), dtype=bool)
    wins = np.sign(fp32["chosen"] - fp32["rejected"])
    order = np.argsort(np.abs(fp32["chosen"] - fp32["rejected"]), kind="stable")
    flipped = start = 0
    while start < n:
        rows = order[start : start + chunk]
        texts = text_of[:, rows].ravel()
        todo = np.unique(texts[~done[texts]])
        rewards[todo] = scorer.score_encoded([distinct[i] for i in todo])
        done[todo] = True
        flipped += int(np.sum(np.sign(rewards[text_of[0, rows]] - rewards[text_of[1, rows]]) != wins[rows]))
        start += len(rows)
        if (n - flipped) / n < min_agreement:
            return None, flipped, start
        chunk *= 2  # later pairs rarely flip: bigger chunks length-group better
    return {"chosen": rewards[text_of[0]], "rejected": rewards[text_of[1]]}, flipped, n


def agreement(fp32: Mapping[str, np.ndarray], int8: Mapping[str, np.ndarray]) -> dict[str, float]:
    """How often int8 picks the same winner as fp32, and how close the rewards are; with one head per objective,
    the head that agrees least decides."""
    same = np.sign(fp32["chosen"] - fp32["rejected"]) == np.sign(int8["chosen"] - int8["rejected"])
    both = np.concatenate([fp32["chosen"], fp32["rejected"]]), np.concatenate([int8["chosen"], int8["rejected"]])
    heads = same if same.ndim == 2 else same[:, None]
    return {
        "agreement": float(np.min(np.mean(heads, axis=0))),
        "max_abs_diff": float(np.max(np.abs(both[0] - both[1]))),
        "pearson": float(np.corrcoef(both[0].ravel(), both[1].ravel())[0, 1]),
    }


def relative_speed(
    fp32: BundleScorer,
    int8: BundleScorer,
    eval_files: Mapping[str, Sequence[PreferencePair]],
    n: int = 64,
    rounds: int = 5,
) -> float:
    """fp32 time / int8 time on up to `n` held-out pairs in the service's CPU batches (2048 tokens, 16 pairs).

    Each batch is run by both graphs in turn, the order alternating, `rounds` times, and each graph's best time per
    batch counts: a machine whose speed drifts (other jobs, frequency) slows both graphs alike, where timing one
    whole pass after the other let a drift decide (a 32-pair, best-of-3 version read 1.23x for a scheme that
    alternating timing put at 1.07x). Recorded in the bundle so the service's default precision is a property of
    the bundle (every replica serves the same graph), not a per-start measurement.
    """
    pairs = [p for ps in eval_files.values() for p in ps][:n]
    if not pairs:
        return 1.0  # nothing to time on: claim no speed-up, so the service stays on fp32
    encoded = fp32.encode([p.prompt for p in pairs], [p.chosen for p in pairs])
    batches = [[encoded[i] for i in b] for b in plan_batches([len(e) for e in encoded], 2048, 16)]
    best = {"fp32": [float("inf")] * len(batches), "int8": [float("inf")] * len(batches)}
    scorers = [("fp32", fp32), ("int8", int8)]
    for round_ in range(rounds):
        for k, batch in enumerate(batches):
            for name, scorer in scorers if (round_ + k) % 2 == 0 else scorers[::-1]:
                started = time.perf_counter()
                scorer.run(batch)
                best[name][k] = min(best[name][k], time.perf_counter() - started)
    return sum(best["fp32"]) / sum(best["int8"])
