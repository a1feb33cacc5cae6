"""BundleScorer: an ONNX Runtime session plus the bundle's formatting -> float32 rewards. No asyncio, no HTTP.

training.evaluate, the export's parity checks and the service all score through this class, so "the same code
path" is literally the same code. Which precision to open is models.serving's decision.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .batching import plan_batches
from .bundle import Bundle
from .formatting import Encoded, Formatter
from .inputs import pad
from .messages import Text

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def choose_providers(device: str) -> list[str]:
    """`auto` takes CUDA when this onnxruntime build sees a GPU; `cuda` insists on it; `cpu` never uses it."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise RuntimeError(f"device 'cuda' requested but onnxruntime offers only {', '.join(available)}")
    return [CPU]


def session_providers(providers: Sequence[str], precision: str) -> list[str | tuple[str, dict[str, str]]]:
    """`providers` as InferenceSession takes them. An fp32 graph on CUDA runs without TF32: ONNX Runtime would
    otherwise round its MatMul inputs to 10-bit mantissas on Ampere and later GPUs, and fp32 is the precision a
    user picks for rewards that match training's; fp16 is the fast path there."""
    return [(p, {"use_tf32": "0"}) if p == CUDA and precision == "fp32" else p for p in providers]


class BundleScorer:
    """Scores pairs with one ONNX Runtime session. `run` is thread-safe (ONNX Runtime sessions are)."""

    def __init__(
        self,
        bundle: Bundle,
        precision: str,
        device: str = "auto",
        intra_op_threads: int = 0,
        inter_op_threads: int = 1,
        spin: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.bundle = bundle
        self.providers = choose_providers(device)
        self.precision = precision
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.log_severity_level = 3
        # Spinning keeps idle intra-op threads busy-waiting for the next op: fastest for back-to-back offline
        # batches, but in a server it steals the cores the event loop and tokeniser need between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(
            os.fspath(bundle.model_path(self.precision)),
            options,
            providers=session_providers(self.providers, self.precision),
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.formatter = Formatter.from_file(os.fspath(bundle.tokenizer_path), bundle.meta.formatting)
        self.pad_id = bundle.meta.pad_token_id

    def close(self) -> None:
        """Release the ONNX Runtime session (its memory and intra-op threads) now, not at some later collection;
        the scorer cannot run after this."""
        self.__dict__.pop("session", None)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def encode(self, prompts: Sequence[Text], completions: Sequence[Text]) -> list[Encoded]:
        return self.formatter.encode_many(prompts, completions)

    @property
    def shape(self) -> tuple[int, ...]:
        """One text's rewards: () for one reward, (k,) for k objectives."""
        k = self.bundle.outputs
        return () if k == 1 else (k,)

    def run(self, batch: Sequence[Encoded]) -> np.ndarray:
        """Rewards for one batch, shape (len(batch),) or (len(batch), k), float32."""
        if not batch:
            return np.zeros((0, *self.shape), dtype=np.float32)
        out: Any = self.session.run(None, pad(batch, self.pad_id, self.input_names))[0]
        return np.asarray(out, dtype=np.float32).reshape(len(batch), *self.shape)

    def score_encoded(
        self, encoded: Sequence[Encoded], max_batch_tokens: int = 4096, max_batch_size: int = 16
    ) -> np.ndarray:
        """Score many pairs offline: length-grouped batches, results in input order."""
        rewards = np.zeros((len(encoded), *self.shape), dtype=np.float32)
        for batch in plan_batches([len(e) for e in encoded], max_batch_tokens, max_batch_size):
            rewards[batch] = self.run([encoded[i] for i in batch])
        return rewards

    def score(
        self,
        prompts: Sequence[Text],
        completions: Sequence[Text],
        max_batch_tokens: int = 4096,
        max_batch_size: int = 16,
    ) -> np.ndarray:
        return self.score_encoded(self.encode(prompts, completions), max_batch_tokens, max_batch_size)
