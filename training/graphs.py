"""ONNX graph transforms, file to file: torch -> fp32 graph -> optimised fp32, static int8, fp16. No policy here.

The fp32 graph comes from the TorchScript exporter with eager attention (the pattern ONNX Runtime's transformer
optimizer fuses into Attention / SkipLayerNorm / BiasGelu). int8 is static (activation scales fixed at
calibration), so a pair's score never depends on its batch mates. Which of these graphs a bundle ships is
decided by training.export from the checks in training.acceptance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.bundle import data_file
from models.formatting import Encoded

from .config import EXTERNAL_DATA_BYTES
from .inputs import pad_batch
from .model import RewardModel

log = logging.getLogger("training.graphs")
OPSET = 17
CALIBRATION_STRIDE = 16
# Families whose graphs ONNX Runtime's optimizer knows as "bert" (same encoder layer pattern).
BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet", "deberta-v2"}


def onnx_input_names(model: RewardModel) -> list[str]:
    names = ["input_ids", "attention_mask"]
    return [*names, "token_type_ids"] if model.uses_token_types else names


def weight_bytes(model: Any) -> int:
    """Bytes of a graph's initializers, wherever they are stored."""
    import onnx

    total = 0
    for t in model.graph.initializer:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        total += int(np.prod(t.dims, dtype=np.int64)) * itemsize
    return total


def save_graph(model: Any, out: Path, external_bytes: int = EXTERNAL_DATA_BYTES) -> None:
    """Write a graph; weights over `external_bytes` go into one external-data file beside it (models.bundle.data_file):
    protobuf cannot hold a message over 2 GB, which a 0.5 B-parameter model in fp32 already is."""
    import onnx

    data = out.with_name(data_file(out.name))
    data.unlink(missing_ok=True)
    if weight_bytes(model) > external_bytes:
        onnx.save_model(
            model,
            str(out),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(out))


def export_fp32(model: RewardModel, sample: Sequence[Encoded], pad_id: int, path: Path) -> list[str]:
    """TorchScript-export the reward model with dynamic batch and sequence axes; output `reward` (batch,).

    `path` should be in a folder of its own: the exporter writes a big model's weights as many files beside it.
    """
    names = onnx_input_names(model)
    inputs = pad_batch(sample, pad_id)
    try:
        model.model.set_attn_implementation("eager")  # sdpa exports to a pattern the optimizer cannot fuse
    except (AttributeError, ValueError) as e:
        log.info("keeping the model's attention implementation for export: %s", e)
    # One reward: output `reward` (batch,), as every bundle before objectives; k objectives: `rewards` (batch, k).
    output = "reward" if model.heads == 1 else "rewards"
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {output: {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(
            model,
            tuple(inputs[n] for n in names),
            str(path),
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return names


def optimize_fp32(
    raw: Path, out: Path, model: RewardModel, external_bytes: int = EXTERNAL_DATA_BYTES
) -> dict[str, int]:
    """Fuse attention, LayerNorm and GELU for BERT-like encoders; other graphs are left to ORT's own passes. The
    result is written with save_graph (one external-data file when big)."""
    import onnx

    config = model.model.config
    if model.architecture != "encoder" or config.model_type not in BERT_LIKE:
        save_graph(onnx.load(str(raw)), out, external_bytes)
        return {}
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(raw), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    )
    save_graph(optimized.model, out, external_bytes)
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


def convert_fp16(fp32: Path, out: Path, external_bytes: int = EXTERNAL_DATA_BYTES) -> None:
    """fp16 weights and activations; inputs and the `reward` output keep their types, so every graph takes the same
    feeds. ONNX Runtime's transformer converter keeps its block list (ops without fp16 kernels: Range, CumSum,
    TopK, …) in fp32 and inserts the casts around them."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fp32)))
    model.convert_float_to_float16(keep_io_types=True)
    model.topological_sort()
    save_graph(model.model, out, external_bytes)
