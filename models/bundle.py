"""The model bundle on disk: `write_bundle` and `read_bundle`, exact inverses, with every refusal in one place.

A bundle is a folder:

    reward_model.json   BundleMeta (schema version, formatting, reward statistics, metrics, file hashes)
    tokenizer.json      the `tokenizers` tokenizer training used
    model.onnx          fp32 graph, dynamic batch and sequence axes, output `reward` (batch,), or `rewards`
                        (batch, k) for a bundle with k objectives
    model.onnx.data     optional: the weights of a graph over ONNX's 2 GB limit, beside it (likewise for the others)
    model.int8.onnx     optional, statically quantised (batch-invariant) int8 graph
    model.fp16.onnx     optional, fp16 graph for GPUs (int64 inputs and a float32 output, like the others)

The writer builds the folder beside its destination and renames it into place, so a crash never leaves a
half bundle that looks whole. The reader refuses unknown schema versions, missing files and files whose
SHA-256 differs from the one recorded at export (a swapped tokenizer, a truncated copy).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .formatting import FormatSpec
from .messages import FormatError
from .records import BundleError, ExportChecks, Reference, RewardHead, RewardStats

SCHEMA_VERSION = 3
# Older bundles read as version 3 ones: 2 added FormatSpec.append_eos (v1 decoders always appended EOS, its
# default), BundleMeta.reward_head and external-data files, none of which a v1 bundle has; 3 added
# FormatSpec.truncation and truncation_marker (every older bundle cut the prompt from the left: "left", the default).
READABLE_VERSIONS = (1, 2, 3)
TRUNCATION_FIELDS = ("truncation", "truncation_marker")
META_FILE = "reward_model.json"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}


def data_file(model_file: str) -> str:
    """The external-data file of a graph over ONNX's 2 GB protobuf limit: its weights, beside it (ONNX Runtime
    finds it by this name, recorded in the graph)."""
    return model_file + ".data"


ARCHITECTURES = ("encoder", "decoder")


@dataclass
class BundleMeta:
    """What the service must know to score exactly as training did, and what the bundle claims about itself."""

    model_id: str
    base_model: str
    architecture: str
    formatting: FormatSpec
    onnx_inputs: list[str]
    precisions: list[str]
    pad_token_id: int = 0
    # Reward mean and std on the eval split, per precision: the service's `normalize` uses them.
    reward_stats: dict[str, RewardStats] = field(default_factory=dict)
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    parity: ExportChecks = field(default_factory=ExportChecks)
    # Probe pairs and their rewards per precision, re-scored at serve time (models.reference); none in old bundles.
    reference: Reference | None = None
    # Where the reward comes from: model family, pooling, the position it is read at, label index (shown by /info).
    reward_head: RewardHead | None = None
    # Multi-objective bundles (k > 1): the heads' names, in the order of the graph's `rewards` output (batch, k),
    # and the default combination (weights by name) that /score returns as the reward. [] for one reward, whose
    # graph outputs `reward` (batch,), as every bundle before objectives did.
    objectives: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    data_fingerprint: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256, filled in by write_bundle
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object `from_dict` reads back into an equal BundleMeta."""
        data = {f: getattr(self, f) for f in self.__dataclass_fields__}
        data["formatting"] = self.formatting.to_dict()
        data["reward_stats"] = {p: s.to_dict() for p, s in self.reward_stats.items()}
        data["parity"] = self.parity.to_dict()
        data["reference"] = self.reference.to_dict() if self.reference else {}
        data["reward_head"] = self.reward_head.to_dict() if self.reward_head else {}
        return copy.deepcopy(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BundleMeta:
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            known = ", ".join(map(str, READABLE_VERSIONS))
            raise BundleError(f"unknown schema_version {version!r} (this reader knows {known})")
        fields = dict(data)
        unknown = set(fields) - set(cls.__dataclass_fields__)
        if unknown:
            raise BundleError(f"unknown metadata fields: {', '.join(sorted(unknown))}")
        try:
            if version < 3 and set(TRUNCATION_FIELDS) & set(fields["formatting"]):
                raise BundleError(f"invalid metadata: schema {version} has no {' or '.join(TRUNCATION_FIELDS)}")
            fields["formatting"] = FormatSpec.from_dict(fields["formatting"])
            objectives = list(fields.get("objectives", []))
            fields["reward_stats"] = {
                p: RewardStats.from_dict(s, objectives, f"reward_stats.{p}")
                for p, s in dict(fields.get("reward_stats", {})).items()
            }
            fields["parity"] = ExportChecks.from_dict(fields.get("parity", {}))
            reference = fields.get("reference")
            fields["reference"] = Reference.from_dict(reference, len(objectives)) if reference else None
            head = fields.get("reward_head")
            fields["reward_head"] = RewardHead.from_dict(head) if head else None
            meta = cls(**fields)
        except (KeyError, TypeError, FormatError) as e:
            raise BundleError(f"invalid metadata: {e}") from e
        if meta.architecture not in ARCHITECTURES:
            raise BundleError(f"unknown architecture {meta.architecture!r}")
        bad = [p for p in meta.precisions if p not in MODEL_FILES]
        if bad or "fp32" not in meta.precisions:
            raise BundleError(f"precisions must include fp32 and be among {sorted(MODEL_FILES)}: {meta.precisions}")
        if meta.objectives and (
            len(set(meta.objectives)) != len(meta.objectives) or set(meta.weights) - set(meta.objectives)
        ):
            raise BundleError(
                f"objectives must be distinct names and weights among them: {meta.objectives} {meta.weights}"
            )
        return meta

    def stats_for(self, precision: str) -> RewardStats | None:
        """The reward statistics `normalize` uses for `precision` (fp32's if it has none of its own), or None when
        the bundle recorded none (an imported model exported without evaluation data): normalising is then
        refused, never silently an identity."""
        return self.reward_stats.get(precision) or self.reward_stats.get("fp32")

    def reward_scale(self) -> float:
        """The typical size of a reward difference, which tolerances are relative to: the fp32 reward std on the
        evaluation pairs (the smallest head's, with several objectives), else that of the fp32 reference probes,
        else 1."""
        stats = self.reward_stats.get("fp32")
        if stats:
            return stats.scale
        rows = self.reference.rewards.get("fp32") if self.reference else None
        probes = [x for row in rows for x in (row if isinstance(row, list) else [row])] if rows else []
        if len(probes) > 1:
            mean = sum(probes) / len(probes)
            return max((sum((r - mean) ** 2 for r in probes) / len(probes)) ** 0.5, 1e-6)
        return 1.0


@dataclass(frozen=True)
class Bundle:
    """A bundle read and verified: its folder and metadata."""

    path: Path
    meta: BundleMeta

    @property
    def outputs(self) -> int:
        """Rewards per text: 1, or one per objective."""
        return len(self.meta.objectives) or 1

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    def model_path(self, precision: str) -> Path:
        if precision not in self.meta.precisions:
            raise BundleError(f"{self.path}: no {precision} model (has {', '.join(self.meta.precisions)})")
        return self.path / MODEL_FILES[precision]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bundle(out_dir: str | os.PathLike[str], meta: BundleMeta, sources: Mapping[str, Path]) -> Bundle:
    """Copy `sources` (bundle file name -> path) and the metadata into `out_dir`, atomically.

    Needs the tokenizer and one model file per precision in `meta.precisions` (with its external-data file when
    `sources` has one); fills in `meta.files`, which the reader verifies one by one.
    """
    out = Path(out_dir).resolve()
    models = {MODEL_FILES[p] for p in meta.precisions}
    required = {TOKENIZER_FILE} | models | {data_file(m) for m in models if data_file(m) in sources}
    missing = required - set(sources)
    if missing:
        raise BundleError(f"cannot write bundle {out}: missing {', '.join(sorted(missing))}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        meta.files = {}
        for name in sorted(required):
            shutil.copyfile(sources[name], tmp / name)
            meta.files[name] = sha256_file(tmp / name)
        with open(tmp / META_FILE, "w", encoding="utf-8") as f:
            json.dump(meta.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_bundle(out)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder onto `out`; an old bundle there is moved aside first, then removed."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "bundle")
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and validate a bundle; raises BundleError naming the folder and the problem."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a model bundle folder (it does not exist or is not a directory)")
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise BundleError(f"{root}: missing {META_FILE} (not a bundle, or an export that did not finish)")
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{meta_path}: unreadable metadata: {e}") from e
    if not isinstance(data, dict):
        raise BundleError(f"{meta_path}: metadata must be a JSON object")
    try:
        meta = BundleMeta.from_dict(data)
    except BundleError as e:
        raise BundleError(f"{meta_path}: {e}") from e
    required = {TOKENIZER_FILE} | {MODEL_FILES[p] for p in meta.precisions}
    unrecorded = required - set(meta.files)
    if unrecorded:
        raise BundleError(f"{meta_path}: no recorded hash for {', '.join(sorted(unrecorded))}")
    for name in sorted(set(meta.files)):
        if Path(name).name != name or name in ("", ".", ".."):
            raise BundleError(f"{meta_path}: file names must be plain names inside the bundle, not {name!r}")
        file = root / name
        if not file.is_file():
            raise BundleError(f"{root}: missing {name}")
        if sha256_file(file) != meta.files[name]:
            what = (
                "tokenizer does not match the one the model was exported with"
                if name == TOKENIZER_FILE
                else ("file is corrupt or was replaced after export")
            )
            raise BundleError(f"{file}: {what} (sha256 differs from {META_FILE})")
    return Bundle(root, meta)
