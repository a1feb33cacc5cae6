"""torch reward model -> ONNX fp32 (optimised) -> static int8, fp16; parity checks; evaluation; atomic write.

Order of work: export the fp32 graph with the TorchScript exporter and eager attention (the pattern ONNX
Runtime's transformer optimizer fuses into Attention / SkipLayerNorm / BiasGelu), optimise it, quantise it
statically (activation scales fixed at calibration, so a pair's score does not depend on its batch mates),
write a *candidate* bundle, and check it through the same reader and scorer the service uses: ONNX vs torch
on real pairs, int8 vs fp32 agreement on held-out pairs, fp16 vs fp32 on the parity pairs. The bundle records
reference rewards of fixed probe pairs for every precision it ships (models.reference), which the service
re-scores at load. Only a candidate that passes is renamed into --out.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.bundle import MODEL_FILES, TOKENIZER_FILE, Bundle, BundleMeta, read_bundle, write_bundle
from models.formatting import Encoded, FormatSpec, dedupe
from models.reference import make_reference
from models.runtime import BundleScorer

from .config import FitConfig
from .data import PreferencePair
from .evaluate import build_report, encode_pairs, evaluate, score_pairs, write_plot
from .model import RewardModel
from .trainer import pad_batch

log = logging.getLogger("training.export")
OPSET = 17
# Batch-invariant int8 schemes, fastest first; the export keeps the first that agrees with fp32 well enough.
INT8_SCHEMES = ("square+contracting", "square")
CALIBRATION_STRIDE = 16
AGREEMENT_PAIRS = 512  # at least this many pairs decide int8 vs fp32 agreement
SCREEN_CHUNK = 64  # pairs in the first look at how many winners int8 flipped (each next look doubles it)
# Families whose graphs ONNX Runtime's optimizer knows as "bert" (same encoder layer pattern).
BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet", "deberta-v2"}


class ExportError(RuntimeError):
    """The exported graphs failed a parity or agreement check; nothing was written to --out."""


def onnx_input_names(model: RewardModel) -> list[str]:
    names = ["input_ids", "attention_mask"]
    return [*names, "token_type_ids"] if model.uses_token_types else names


def export_fp32(model: RewardModel, sample: Sequence[Encoded], pad_id: int, path: Path) -> list[str]:
    """TorchScript-export the reward model with dynamic batch and sequence axes; output `reward` (batch,)."""
    names = onnx_input_names(model)
    inputs = pad_batch(sample, pad_id)
    try:
        model.model.set_attn_implementation("eager")  # sdpa exports to a pattern the optimizer cannot fuse
    except (AttributeError, ValueError) as e:
        log.info("keeping the model's attention implementation for export: %s", e)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"reward": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(
            model,
            tuple(inputs[n] for n in names),
            str(path),
            input_names=names,
            output_names=["reward"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return names


def optimize_fp32(raw: Path, out: Path, model: RewardModel) -> dict[str, int]:
    """Fuse attention, LayerNorm and GELU for BERT-like encoders; other graphs are left to ORT's own passes."""
    config = model.model.config
    if model.architecture != "encoder" or config.model_type not in BERT_LIKE:
        shutil.copyfile(raw, out)
        return {}
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(raw), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    )
    optimized.save_model_to_file(str(out))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def quantize_int8(
    fp32: Path,
    out: Path,
    calibration: Sequence[dict[str, np.ndarray]],
    scheme: str,
    percentile: float = 99.999,
    cache: Path | None = None,
) -> dict[str, int]:
    """Static int8 (QDQ): activation ranges fixed at calibration, so a pair's score never depends on its batch.

    Measured on MiniLM: most of the error comes from quantising the expanding MatMuls (FFN1, whose LayerNorm
    input has outlier channels) and from re-quantising MatMul outputs. So only the `scheme`'s non-expanding
    weight MatMuls (square: attention output; contracting: FFN output) are quantised, with per-channel int8
    weights, percentile-calibrated uint8 activations and fp32 outputs; the reward head and
    activation×activation products stay fp32. Calibration covers every MatMul whatever the scheme, so a `cache`
    file written by one call is read by the next instead of running the calibration data again.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # The optimizer leaves no value_info; without shape inference the calibrator silently skips every tensor
    # produced by a fused op and only weights get quantised.
    model = SymbolicShapeInference.infer_shapes(onnx.load(str(fp32)), auto_merge=True, guess_output_rank=True)
    inferred = out.with_suffix(".shapes.onnx")
    onnx.save(model, str(inferred))
    weights = {w.name: tuple(w.dims) for w in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    chosen = {n.name for n in matmuls if _in_scheme(weights[n.input[1]], scheme) and not _is_head(n.name)}
    exclude = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.name not in chosen]

    stride = max(1, min(CALIBRATION_STRIDE, len(calibration)))  # no data at all is fine when the cache has it
    usable = list(calibration)[: len(calibration) - len(calibration) % stride]

    class Reader(CalibrationDataReader):
        """Hands out `stride` inputs at a time: ORT keeps every activation of a pass in memory (GBs)."""

        def __init__(self) -> None:
            self.items = iter(usable)

        def __len__(self) -> int:
            return len(usable)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.items = iter(usable[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with _flat_histograms():
        quantize_static(
            str(inferred),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            nodes_to_exclude=exclude,
            extra_options={
                "DefaultTensorType": onnx.TensorProto.FLOAT,
                "MatMulConstBOnly": True,
                "OpTypesToExcludeOutputQuantization": ["MatMul"],
                "CalibPercentile": percentile,
                "CalibStridedMinMax": stride,
            },
            calibration_cache_path=cache,
        )
    inferred.unlink()
    return {"quantized_matmuls": len(chosen), "fp32_matmuls": len(matmuls) - len(chosen)}


@contextmanager
def _flat_histograms() -> Iterator[None]:
    """ORT's histogram calibrator stacks per-batch arrays and fails on varying sequence lengths; flatten them."""
    from onnxruntime.quantization import calibrate

    original = calibrate.HistogramCollector.collect

    def collect(self: Any, data: dict[str, Any]) -> Any:
        flat = {k: np.concatenate([x.ravel() for x in v]) if isinstance(v, list) else v for k, v in data.items()}
        return original(self, flat)

    calibrate.HistogramCollector.collect = collect
    try:
        yield
    finally:
        calibrate.HistogramCollector.collect = original


def _in_scheme(dims: tuple[int, ...], scheme: str) -> bool:
    """Weight (K, N) of x @ W: `square` is K == N (attention output), `contracting` is K > N (FFN output)."""
    if len(dims) != 2 or dims[1] <= 1:
        return False
    k, n = dims
    return (k == n and "square" in scheme) or (k > n and "contracting" in scheme)


def _is_head(node_name: str) -> bool:
    name = node_name.lower()
    return any(k in name for k in ("pooler", "classifier", "score"))


def torch_rewards(model: RewardModel, encoded: Sequence[Encoded], pad_id: int, batch: int = 8) -> np.ndarray:
    """Rewards from the torch model (fp32, eval mode) for the parity check."""
    out = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch):
            inputs = pad_batch(encoded[start : start + batch], pad_id)
            types = inputs["token_type_ids"] if model.uses_token_types else None
            out.append(model(inputs["input_ids"], inputs["attention_mask"], types).float().numpy())
    return np.concatenate(out)


def _sample(pairs: Sequence[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)
    return [pairs[i] for i in sorted(picks)]


def export_bundle(
    cfg: FitConfig,
    model: RewardModel,
    tokenizer: Any,
    spec: FormatSpec,
    train_pairs: Sequence[PreferencePair],
    held_out: Mapping[str, Sequence[PreferencePair]],
    summary: dict[str, Any],
) -> Bundle:
    """Export, check and evaluate; write the bundle to cfg.out only if every check passes."""
    from tokenizers import Tokenizer

    from models.formatting import Formatter

    started = time.perf_counter()
    work = cfg.work_dir / "export"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # Saved first, so a failed check never costs the training run: --resume re-exports from the checkpoint.
    model.save_backbone(cfg.work_dir / "hf", tokenizer)
    model = model.fp32_copy(cfg.work_dir / "hf")
    pad_id = int(tokenizer.pad_token_id)

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(work / TOKENIZER_FILE))
    formatter = Formatter.from_file(str(work / TOKENIZER_FILE), spec)
    calib_pairs = _sample(train_pairs, cfg.calibration_pairs, cfg.seed)
    prompts = [p.prompt for p in calib_pairs]
    calib = formatter.encode_many(prompts, [p.chosen for p in calib_pairs])
    calib += formatter.encode_many(prompts, [p.rejected for p in calib_pairs])

    names = export_fp32(model, calib[:2], pad_id, work / "model.raw.onnx")
    fusions = optimize_fp32(work / "model.raw.onnx", work / MODEL_FILES["fp32"], model)
    log.info("fp32 graph exported; fusions: %s", fusions or "none")
    sources = {TOKENIZER_FILE: work / TOKENIZER_FILE, MODEL_FILES["fp32"]: work / MODEL_FILES["fp32"]}
    meta = BundleMeta(
        model_id="",
        base_model=summary["base_model"],
        architecture=model.architecture,
        formatting=spec,
        onnx_inputs=names,
        precisions=["fp32"],
        pad_token_id=pad_id,
        data_fingerprint=summary.get("data_fingerprint", ""),
        training={k: v for k, v in vars(cfg).items() if k not in ("data", "eval_data")}
        | {"data": list(cfg.data), "eval_data": cfg.eval_data, "summary": summary | {"fusions": fusions}},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    candidate = write_bundle(work / "candidate", meta, sources)
    meta.model_id = f"{Path(cfg.out).name}-{candidate.meta.files[MODEL_FILES['fp32']][:12]}"

    eval_pairs = [p for pairs in held_out.values() for p in pairs]
    parity_pairs = _sample(eval_pairs or list(train_pairs), cfg.parity_pairs, cfg.seed)
    meta.parity = check_parity(candidate, model, parity_pairs, pad_id, cfg)
    eval_files = held_out or {"train (no held-out pairs)": list(train_pairs)}
    reports, rewards = {}, {}
    reports["fp32"], rewards["fp32"] = evaluate(BundleScorer(candidate, "fp32", device="cpu"), eval_files)
    if cfg.int8:
        feeds = [_feeds(e, pad_id, names) for e in calib]
        # Agreement measures quantisation, not generalisation: small held-out sets are topped up with training
        # pairs, so one flipped pair in 49 cannot decide the export.
        extra = _sample(train_pairs, max(0, AGREEMENT_PAIRS - len(eval_pairs)), cfg.seed + 1) if eval_pairs else []
        reports["int8"], rewards["int8"], meta.parity["int8"] = choose_int8(
            work, sources, meta, feeds, reports["fp32"], rewards["fp32"], eval_files, extra, cfg
        )
    for precision, report in reports.items():
        overall = report["overall"]
        meta.reward_stats[precision] = {"mean": overall["reward_mean"], "std": max(overall["reward_std"], 1e-6)}
    if cfg.fp16:
        limit = cfg.fp16_tolerance * meta.reward_stats["fp32"]["std"]
        meta.parity["fp16"] = add_fp16(work, sources, meta, parity_pairs, limit)
    # Probe rewards of every precision shipped, from the very files written below (the service re-scores them).
    final = write_bundle(work / "candidate", meta, sources)
    meta.reference = make_reference({p: BundleScorer(final, p, device="cpu") for p in meta.precisions})
    meta.eval_metrics = {"split": "eval_data" if cfg.eval_data else "prompt_split", **reports}
    meta.training["summary"]["export_seconds"] = round(time.perf_counter() - started, 1)
    if cfg.plot:
        plot_pairs = [p for pairs in eval_files.values() for p in pairs]
        write_plot(cfg.work_dir / "eval.png", plot_pairs, rewards["fp32"], f"{meta.model_id} (fp32, held out)")
    bundle = write_bundle(cfg.out, meta, sources)
    log.info("bundle written to %s in %.0fs", bundle.path, time.perf_counter() - started)
    return bundle


def choose_int8(
    work: Path,
    sources: dict[str, Path],
    meta: BundleMeta,
    feeds: Sequence[dict[str, np.ndarray]],
    fp32_report: dict[str, Any],
    fp32_rewards: Mapping[str, np.ndarray],
    eval_files: Mapping[str, Sequence[PreferencePair]],
    extra_pairs: Sequence[PreferencePair],
    cfg: FitConfig,
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """The fastest batch-invariant int8 scheme whose winners agree with fp32 on enough pairs.

    Agreement is measured on the held-out pairs plus `extra_pairs`. The schemes share one calibration (they
    calibrate the same tensors), and a scheme that cannot pass is dropped as soon as that is certain (see
    screen_int8), so a rejected scheme costs its quantisation and a fraction of an evaluation. Adds
    model.int8.onnx to `sources` and "int8" to `meta.precisions`; raises ExportError if no scheme passes.
    """
    fp32_scorer = BundleScorer(read_bundle(work / "candidate"), "fp32", device="cpu")
    pairs = [p for file_pairs in eval_files.values() for p in file_pairs] + list(extra_pairs)
    fp32 = dict(fp32_rewards)
    if extra_pairs:
        chosen, rejected, _ = score_pairs(fp32_scorer, extra_pairs)
        fp32 = {
            "chosen": np.concatenate([fp32["chosen"], chosen]),
            "rejected": np.concatenate([fp32["rejected"], rejected]),
        }
    cache = work / "calibration.json"
    cache.unlink(missing_ok=True)
    tried: list[dict[str, Any]] = []
    for scheme in INT8_SCHEMES:
        counts = quantize_int8(work / MODEL_FILES["fp32"], work / MODEL_FILES["int8"], feeds, scheme, cache=cache)
        trial = BundleMeta(**{**vars(meta), "precisions": ["fp32", "int8"], "files": {}})
        candidate = write_bundle(
            work / "candidate", trial, {**sources, MODEL_FILES["int8"]: work / MODEL_FILES["int8"]}
        )
        int8_scorer = BundleScorer(candidate, "int8", device="cpu")
        int8, flipped, screened = screen_int8(int8_scorer, pairs, fp32, cfg.min_int8_agreement)
        result: dict[str, Any] = {"scheme": scheme, **counts, "pairs": len(pairs)}
        if int8 is None:
            # Every pair not yet scored could only agree, so this bounds the scheme's agreement from above.
            result |= {"agreement": (len(pairs) - flipped) / len(pairs), "flipped": flipped, "screened": screened}
            log.info("int8 %s vs fp32: rejected after %d of %d pairs: %s", scheme, screened, len(pairs), result)
            tried.append(result)
            continue
        report, rewards = build_report("int8", eval_files, _by_file(eval_files, int8, fp32_report))
        result = agreement(fp32, int8) | result
        result["accuracy_delta"] = report["overall"]["accuracy"] - fp32_report["overall"]["accuracy"]
        log.info("int8 %s vs fp32: %s", scheme, result)
        tried.append(result)
        if result["agreement"] >= cfg.min_int8_agreement:
            result["speedup"] = round(relative_speed(fp32_scorer, int8_scorer, eval_files), 3)
            log.info(
                "int8 runs %.2fx fp32 here (the service serves int8 by default only if it is faster)", result["speedup"]
            )
            sources[MODEL_FILES["int8"]] = work / MODEL_FILES["int8"]
            meta.precisions = ["fp32", "int8"]
            return report, rewards, result | {"tried": tried[:-1]}
    best = max(t["agreement"] for t in tried)
    raise ExportError(
        f"int8 agrees with fp32 on at most {best:.1%} of held-out pairs (< {cfg.min_int8_agreement:.0%}) with "
        f"every scheme ({', '.join(INT8_SCHEMES)}); bundle not written (use --no-int8 to export fp32 only, "
        "then --resume to re-export without retraining)"
    )


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


def _by_file(
    files: Mapping[str, Sequence[PreferencePair]], rewards: Mapping[str, np.ndarray], fp32_report: Mapping[str, Any]
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Cut rewards of the files' pairs (concatenated in file order) back into build_report's per-file scores.

    Truncation is the tokeniser's, the same for every precision, so fp32's counts stand.
    """
    scored, start = {}, 0
    for name, file_pairs in files.items():
        if file_pairs:
            end = start + len(file_pairs)
            cut = fp32_report["files"][name]["truncated_texts"]
            scored[name] = (rewards["chosen"][start:end], rewards["rejected"][start:end], cut)
            start = end
    return scored


def add_fp16(
    work: Path, sources: dict[str, Path], meta: BundleMeta, pairs: Sequence[PreferencePair], limit: float
) -> dict[str, Any]:
    """Convert the fp32 graph to fp16 (for GPUs) and ship it if it stays within `limit` of fp32 on `pairs`.

    Checked here on CPU, where fp16 is slow but computes the same graph; the service re-checks it on its own
    device against the reference probes and falls back to fp32 there. A graph the converter or ONNX Runtime
    cannot take in fp16 is left out with a warning, not an error: fp32 serves everywhere.
    """
    path = work / MODEL_FILES["fp16"]
    try:
        convert_fp16(work / MODEL_FILES["fp32"], path)
        trial = BundleMeta(**{**vars(meta), "precisions": [*meta.precisions, "fp16"], "files": {}})
        candidate = write_bundle(work / "candidate", trial, {**sources, MODEL_FILES["fp16"]: path})
        fp32, fp16 = (score_pairs(BundleScorer(candidate, p, device="cpu"), pairs)[:2] for p in ("fp32", "fp16"))
        diff = float(np.max(np.abs(np.concatenate(fp16) - np.concatenate(fp32)), initial=0.0))
    except Exception as e:  # an op without an fp16 form: not worth failing a fit over
        log.warning("no fp16 graph in this bundle: %s: %s", type(e).__name__, str(e).strip()[:300])
        return {"kept": False, "error": f"{type(e).__name__}: {str(e).strip()[:300]}"}
    kept = diff <= limit  # False for NaN too
    log.info("fp16 vs fp32: max |diff| %.3g over %d texts (limit %.3g): %s", diff, 2 * len(pairs), limit, kept)
    if kept:
        sources[MODEL_FILES["fp16"]] = path
        meta.precisions = [*meta.precisions, "fp16"]
    return {"kept": kept, "max_abs_diff": diff, "limit": limit, "texts": 2 * len(pairs)}


def convert_fp16(fp32: Path, out: Path) -> None:
    """fp16 weights and activations; inputs and the `reward` output keep their types, so every graph takes the same
    feeds. ONNX Runtime's transformer converter keeps its block list (ops without fp16 kernels: Range, CumSum,
    TopK, …) in fp32 and inserts the casts around them."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fp32)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out))


def relative_speed(
    fp32: BundleScorer, int8: BundleScorer, eval_files: Mapping[str, Sequence[PreferencePair]], n: int = 32
) -> float:
    """fp32 time / int8 time on a few held-out pairs, best of 3 alternating runs each.

    Recorded in the bundle so the service's default precision is a property of the bundle (every replica serves
    the same graph), not a per-start measurement: a conservative scheme can leave int8 no faster than fp32.
    """
    pairs = [p for ps in eval_files.values() for p in ps][:n]
    if not pairs:
        return 1.0  # nothing to time on: claim no speed-up, so the service stays on fp32
    encoded = fp32.encode([p.prompt for p in pairs], [p.chosen for p in pairs])
    best = {"fp32": float("inf"), "int8": float("inf")}
    for _ in range(3):
        for name, scorer in (("fp32", fp32), ("int8", int8)):
            started = time.perf_counter()
            scorer.score_encoded(encoded, max_batch_size=4)
            best[name] = min(best[name], time.perf_counter() - started)
    return best["fp32"] / best["int8"]


def _feeds(encoded: Encoded, pad_id: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    inputs = pad_batch([encoded], pad_id)
    return {n: inputs[n].numpy() for n in names}


def check_parity(
    bundle: Bundle, model: RewardModel, pairs: Sequence[PreferencePair], pad_id: int, cfg: FitConfig
) -> dict[str, Any]:
    """ONNX fp32 (through the service's scorer) vs torch on real pairs; raises ExportError beyond tolerance."""
    scorer = BundleScorer(bundle, "fp32", device="cpu")
    encoded = encode_pairs(scorer, pairs)
    want = torch_rewards(model, encoded, pad_id)
    got = scorer.score_encoded(encoded)
    diff = float(np.max(np.abs(want - got)))
    log.info("parity: max |onnx fp32 - torch| = %.2e over %d texts", diff, len(encoded))
    if not diff <= cfg.parity_atol:
        raise ExportError(f"ONNX fp32 differs from torch by {diff:.2e} (> {cfg.parity_atol:.0e}); bundle not written")
    return {"onnx_vs_torch_max_abs": diff, "parity_texts": len(encoded)}


def agreement(fp32: Mapping[str, np.ndarray], int8: Mapping[str, np.ndarray]) -> dict[str, float]:
    """How often int8 picks the same winner as fp32, and how close the rewards are."""
    same = np.sign(fp32["chosen"] - fp32["rejected"]) == np.sign(int8["chosen"] - int8["rejected"])
    both = np.concatenate([fp32["chosen"], fp32["rejected"]]), np.concatenate([int8["chosen"], int8["rejected"]])
    return {
        "agreement": float(np.mean(same)),
        "max_abs_diff": float(np.max(np.abs(both[0] - both[1]))),
        "pearson": float(np.corrcoef(*both)[0, 1]),
    }
