"""The offline ceiling: a bundle scored in one process with ONNX Runtime (and torch eager, as a peer)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from models.batching import plan_batches
from models.bundle import Bundle
from models.formatting import Encoded
from models.inputs import pad
from models.runtime import BundleScorer


def median_rate(run: Callable[[], int], repeats: int) -> float:
    """Median items/s over `repeats` timed runs (after one warm-up run)."""
    run()
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        items = run()
        rates.append(items / (time.perf_counter() - started))
    return statistics.median(rates)


def rate_rows(
    runtime: str,
    batch_sizes: Sequence[int],
    one_pass: Callable[[int], Callable[[], object]],
    pairs: int,
    tokens: int,
    repeats: int,
) -> list[dict[str, Any]]:
    """One row per batch size: pairs/s and real tokens/s of `one_pass(size)()`, which scores every pair once."""
    rows = []
    for size in batch_sizes:
        run = one_pass(size)

        def timed(run: Callable[[], object] = run) -> int:
            run()
            return pairs

        rate = median_rate(timed, repeats)
        rows.append({"runtime": runtime, "batch": size, "pairs_per_s": rate, "tokens_per_s": rate * tokens / pairs})
    return rows


def ort_offline(
    bundle: Bundle,
    prompts: Sequence[str],
    completions: Sequence[str],
    precision: str,
    batch_sizes: Sequence[int],
    threads: int,
    repeats: int,
) -> list[dict[str, Any]]:
    """pairs/s and real tokens/s per batch size, length-sorted, for one precision."""
    scorer = BundleScorer(bundle, precision, device="auto", intra_op_threads=threads)
    encoded = scorer.encode(prompts, completions)
    tokens = sum(len(e) for e in encoded)

    return rate_rows(
        f"ORT {precision}", batch_sizes, lambda size: ort_pass(scorer, encoded, size), len(encoded), tokens, repeats
    )


def ort_pass(scorer: BundleScorer, encoded: Sequence[Encoded], size: int) -> Callable[[], None]:
    """One offline pass: every encoded pair scored once, in length-sorted batches of `size`."""
    batches = [[encoded[i] for i in b] for b in plan_batches([len(e) for e in encoded], 10**9, size)]

    def run() -> None:
        for batch in batches:
            scorer.run(batch)

    return run


def torch_offline(
    model_dir: Path,
    bundle: Bundle,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_sizes: Sequence[int],
    threads: int,
    repeats: int,
) -> list[dict[str, Any]]:
    """The same pairs through Hugging Face transformers, eager PyTorch fp32 (a peer, not our path)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
    # Same token ids as the service (models.formatting), so only the runtime differs.
    encoded = BundleScorer(bundle, "fp32", device="cpu").encode(prompts, completions)
    tokens = sum(len(e) for e in encoded)
    pad_id = bundle.meta.pad_token_id

    def one_pass(size: int) -> Callable[[], object]:
        plans = plan_batches([len(e) for e in encoded], 10**9, size)

        def run() -> None:
            with torch.inference_mode():
                for plan in plans:
                    feeds = pad([encoded[i] for i in plan], pad_id, ("input_ids", "attention_mask"))
                    model(**{name: torch.from_numpy(array) for name, array in feeds.items()})

        return run

    return rate_rows("torch eager fp32", batch_sizes, one_pass, len(encoded), tokens, repeats)


def cross_encoder_offline(
    model_dir: Path,
    bundle: Bundle,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_sizes: Sequence[int],
    threads: int,
    repeats: int,
) -> list[dict[str, Any]]:
    """sentence-transformers' CrossEncoder.predict on the same HF folder (a peer: the usual pair scorer).

    It tokenises with its own pair truncation (longest first, same max length), so the scores differ from ours;
    the work per pair is the same model at about the same length, which is what this row compares.
    """
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(threads)
    max_length = bundle.meta.formatting.max_length
    model = CrossEncoder(os.fspath(model_dir), num_labels=1, max_length=max_length, device="cpu")
    pairs = list(zip(prompts, completions, strict=True))
    lengths = model.tokenizer(list(prompts), list(completions), truncation=True, max_length=max_length)["input_ids"]
    tokens = sum(len(ids) for ids in lengths)

    def one_pass(size: int) -> Callable[[], object]:
        return lambda: model.predict(pairs, batch_size=size, show_progress_bar=False)

    return rate_rows("CrossEncoder fp32", batch_sizes, one_pass, len(pairs), tokens, repeats)


def forward_flops_per_token(bundle: Bundle, mean_tokens: float) -> float:
    """Multiply-adds ×2 of one token's forward pass, read off the ONNX graph's weight matrices.

    Every weight MatMul/Gemm costs 2·K·N per token; attention adds 2·2·L·d per layer (scores and context) for a
    sequence of L tokens. Embedding lookups cost nothing.
    """
    import onnx

    model = onnx.load(os.fspath(bundle.model_path("fp32")), load_external_data=False)
    weights = {w.name: tuple(w.dims) for w in model.graph.initializer}
    flops = 0.0
    layers, hidden = 0, 0
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in weights:
            dims = weights[node.input[1]]
            if len(dims) == 2:
                flops += 2.0 * dims[0] * dims[1]
        elif node.op_type == "Attention" and node.input[1] in weights:
            k, n = weights[node.input[1]]
            flops += 2.0 * k * n
            layers += 1
            hidden = k
    if layers == 0:  # unfused graph: count attention from the number of Softmax nodes
        layers = sum(n.op_type == "Softmax" for n in model.graph.node)
        hidden = max((d[0] for d in weights.values() if len(d) == 2), default=0)
    return flops + layers * 4.0 * mean_tokens * hidden


def peak_flops(threads: int) -> tuple[float, str]:
    """fp32 peak of `threads` cores: FMA units × SIMD width × 2 flops × clock; the derivation as text."""
    flags, mhz = "", 0.0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = line
                if line.startswith("cpu MHz") and not mhz:
                    mhz = float(line.split(":")[1])
    except OSError:
        pass
    width = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    ghz = (mhz or 2500.0) / 1000
    peak = threads * 2 * width * 2 * ghz * 1e9
    return peak, f"{threads} cores × 2 FMA units × {width} fp32 lanes × 2 flops × {ghz:.2f} GHz"
