"""Bundle write/read round trip, atomic replacement, and every refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.bundle import META_FILE, MODEL_FILES, TOKENIZER_FILE, BundleError, BundleMeta, read_bundle, write_bundle
from models.formatting import FormatSpec
from models.records import Moments, RewardStats


def meta(**overrides: object) -> BundleMeta:
    fields = {
        "model_id": "test",
        "base_model": "tiny",
        "architecture": "encoder",
        "formatting": FormatSpec("pair", 64),
        "onnx_inputs": ["input_ids", "attention_mask"],
        "precisions": ["fp32", "int8"],
        "reward_stats": {"fp32": RewardStats(Moments(0.5, 2.0))},
        "eval_metrics": {"fp32": {"overall": {"accuracy": 0.75}}},
        "data_fingerprint": "abc",
    }
    fields.update(overrides)
    return BundleMeta(**fields)  # type: ignore[arg-type]


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    files = {TOKENIZER_FILE: b'{"tokenizer": 1}', MODEL_FILES["fp32"]: b"fp32 graph", MODEL_FILES["int8"]: b"int8"}
    for name, data in files.items():
        (src / name).write_bytes(data)
    return {name: src / name for name in files}


def test_round_trip_is_exact(tmp_path: Path, sources: dict[str, Path]) -> None:
    written = meta()
    bundle = write_bundle(tmp_path / "b", written, sources)
    again = read_bundle(tmp_path / "b")
    assert again.meta == bundle.meta == written
    assert again.meta.to_dict() == json.loads((tmp_path / "b" / META_FILE).read_text())
    assert again.meta.stats_for("fp32").overall.to_dict() == {"mean": 0.5, "std": 2.0}
    assert again.model_path("int8") == tmp_path / "b" / MODEL_FILES["int8"]


def test_rewrite_replaces_atomically_and_leaves_no_partials(tmp_path: Path, sources: dict[str, Path]) -> None:
    write_bundle(tmp_path / "b", meta(model_id="one"), sources)
    write_bundle(tmp_path / "b", meta(model_id="two"), sources)
    assert read_bundle(tmp_path / "b").meta.model_id == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "src"]


def test_failed_write_leaves_nothing_that_looks_whole(tmp_path: Path, sources: dict[str, Path]) -> None:
    del sources[MODEL_FILES["int8"]]
    with pytest.raises(BundleError, match=r"missing model\.int8\.onnx"):
        write_bundle(tmp_path / "b", meta(), sources)
    assert not (tmp_path / "b").exists()


def test_refusals(tmp_path: Path, sources: dict[str, Path]) -> None:
    with pytest.raises(BundleError, match="not a model bundle folder"):
        read_bundle(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=f"missing {META_FILE}"):
        read_bundle(tmp_path / "empty")

    def fresh(name: str) -> Path:
        write_bundle(tmp_path / name, meta(), sources)
        return tmp_path / name

    def edit_meta(path: Path, **changes: object) -> None:
        data = json.loads((path / META_FILE).read_text())
        data.update(changes)
        (path / META_FILE).write_text(json.dumps(data))

    b = fresh("version")
    edit_meta(b, schema_version=99)
    with pytest.raises(BundleError, match="unknown schema_version 99"):
        read_bundle(b)
    b = fresh("garbled")
    (b / META_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable metadata"):
        read_bundle(b)
    b = fresh("unknown-field")
    edit_meta(b, surprise=1)
    with pytest.raises(BundleError, match="unknown metadata fields: surprise"):
        read_bundle(b)
    b = fresh("reference")
    edit_meta(b, reference={"prompts": ["p"], "completions": ["c"], "ids_sha256": "x", "rewards": {"fp32": [1]}})
    with pytest.raises(BundleError, match="invalid reference"):
        read_bundle(b)  # an int where a float reward belongs
    edit_meta(b, reference={"prompts": ["p"], "completions": ["c"], "ids_sha256": "x", "rewards": {"fp16": [1.0]}})
    with pytest.raises(BundleError, match="invalid reference"):
        read_bundle(b)  # no fp32 rewards
    b = fresh("objective-stats")
    # Two objectives whose statistics have no per-head block: refused here, not a KeyError (a 500) on `normalize`.
    edit_meta(b, objectives=["helpful", "harmless"], reward_stats={"fp32": {"mean": 0.0, "std": 1.0}})
    with pytest.raises(BundleError, match=r"reward_stats\.fp32\.objectives must be an object"):
        read_bundle(b)
    edit_meta(b, objectives=[], reward_stats={"fp32": {"mean": 0.0, "std": 0.0}})
    with pytest.raises(BundleError, match=r"reward_stats\.fp32\.std must be positive"):
        read_bundle(b)
    edit_meta(b, reward_stats={}, parity={"int8": {"scheme": "x"}})
    with pytest.raises(BundleError, match="int8 agreement"):
        read_bundle(b)
    b = fresh("formatting")
    edit_meta(b, formatting={"kind": "telepathy", "max_length": 64})
    with pytest.raises(BundleError, match="unknown formatting kind"):
        read_bundle(b)
    b = fresh("missing-file")
    (b / MODEL_FILES["fp32"]).unlink()
    with pytest.raises(BundleError, match=r"missing model\.onnx"):
        read_bundle(b)
    b = fresh("tokenizer")
    (b / TOKENIZER_FILE).write_bytes(b'{"tokenizer": 2}')
    with pytest.raises(BundleError, match="tokenizer does not match the one the model was exported with"):
        read_bundle(b)
    b = fresh("corrupt")
    with open(b / MODEL_FILES["int8"], "ab") as f:
        f.write(b"garbage")
    with pytest.raises(BundleError, match="corrupt or was replaced"):
        read_bundle(b)
    with pytest.raises(BundleError, match="no int8 model"):
        read_bundle(fresh_fp32_only(tmp_path, sources)).model_path("int8")


def fresh_fp32_only(tmp_path: Path, sources: dict[str, Path]) -> Path:
    only = {k: v for k, v in sources.items() if k != MODEL_FILES["int8"]}
    write_bundle(tmp_path / "fp32", meta(precisions=["fp32"]), only)
    return tmp_path / "fp32"


def test_real_bundle_reads_back(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = read_bundle(tiny_bundle)
    assert bundle.meta.precisions == ["fp32", "int8", "fp16"]
    assert set(bundle.meta.reference.rewards) == {"fp32", "int8", "fp16"}
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    assert read_bundle(copy).meta == bundle.meta
