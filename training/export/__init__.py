"""export_bundle(job): a torch reward model -> checked ONNX graphs -> evaluated bundle, written only if it passes
(`python -m training.export`, in __main__.py, runs it on an existing Hugging Face reward model).

The one export path: training.fit ends by calling it, and so does the import of an existing Hugging Face reward
model. Order of work: the fp32 graph (training.graphs), ONNX vs torch parity, evaluation, then the optional
precisions, each kept only if its check passes (training.acceptance): static int8 (the fastest scheme whose
winners agree with fp32 on enough pairs), fp16 (within a tolerance of fp32). Candidates are scored straight from
the work folder, whose files already carry their bundle names; the metadata is built once, with the reference
probes of every precision shipped, and the bundle is written once, atomically, into `out`.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import MODEL_FILES, TOKENIZER_FILE, Bundle, BundleMeta, data_file, sha256_file, write_bundle
from models.formatting import FormatSpec, Formatter
from models.inputs import pad
from models.objectives import combine
from models.records import ExportChecks, Fp16Check, Moments, RewardHead, RewardStats
from models.reference import ABS_FLOOR, make_reference
from models.runtime import BundleScorer

from .. import acceptance, graphs
from ..config import ExportOptions
from ..data import PreferencePair
from ..evaluate import build_report, evaluate, score_pairs, write_plot
from ..model import RewardModel
from ..tokens import backend

log = logging.getLogger("training.export")
# Batch-invariant int8 schemes, fastest first; the export keeps the first that agrees with fp32 well enough.
INT8_SCHEMES = ("square+contracting", "square")


class ExportError(RuntimeError):
    """The exported graphs failed a parity or agreement check; nothing was written to the bundle folder."""


@dataclass(frozen=True)
class ExportJob:
    """Everything one export needs: the model, how its text becomes tokens, the pairs to check it on, the policy."""

    model: RewardModel  # an fp32 copy in eval mode (RewardModel.fp32_copy), never the object training ran
    tokenizer: Any  # Hugging Face fast tokenizer: its backend becomes the bundle's tokenizer.json
    spec: FormatSpec
    out: Path
    work: Path
    name: str  # the model id's prefix
    base_model: str
    calibration: Sequence[PreferencePair]  # int8 activation ranges
    parity: Sequence[PreferencePair]  # ONNX vs torch, fp16 vs fp32
    eval_files: Mapping[str, Sequence[PreferencePair]]  # metrics, per file; none: no metrics, no reward statistics
    agreement_extra: Sequence[PreferencePair] = ()  # tops small eval sets up for the int8 agreement
    pad_id: int | None = None  # default: the tokenizer's pad id
    reward_head: Mapping[str, Any] = field(default_factory=dict)  # BundleMeta.reward_head
    objectives: Sequence[str] = ()  # one head per objective (the model outputs (batch, k)); () for one reward
    weights: Mapping[str, float] = field(default_factory=dict)  # the default combination (BundleMeta.weights)
    split: str = "prompt_split"
    data_fingerprint: str = ""
    provenance: Mapping[str, Any] = field(default_factory=dict)  # BundleMeta.training (config and summary)
    options: ExportOptions = field(default_factory=ExportOptions)
    int8: bool = True  # also try a static int8 graph (kept only if it agrees with fp32)
    fp16: bool = True  # also try an fp16 graph (kept only within the tolerance)
    plot: Path | None = None  # eval.png: reward histograms and reward vs length on the evaluation pairs


@dataclass(frozen=True)
class Int8Choice:
    """The int8 scheme kept, its evaluation and what every scheme tried measured."""

    report: dict[str, Any]
    rewards: dict[str, np.ndarray]
    parity: dict[str, Any]


def export_bundle(job: ExportJob) -> Bundle:
    """Export, check and evaluate; write the bundle to job.out only if every check passes (else ExportError)."""
    started = time.perf_counter()
    work, model, options = job.work, job.model.eval(), job.options  # eval: no dropout in what is traced or compared
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pad_id = int(job.tokenizer.pad_token_id if job.pad_id is None else job.pad_id)
    formatter = _save_tokenizer(job.tokenizer, job.spec, work / TOKENIZER_FILE)
    prompts = [p.prompt for p in job.calibration]
    calib = formatter.encode_many(prompts, [p.chosen for p in job.calibration])
    calib += formatter.encode_many(prompts, [p.rejected for p in job.calibration])

    # Two texts of different lengths: tracing a batch of one could bake a size of 1 into the graph.
    sample = calib[:2] if len(calib) >= 2 else formatter.encode_many(["Is this a sample?", "Hi"], ["Yes, it is.", "Yo"])
    raw = work / "raw" / "model.onnx"
    raw.parent.mkdir()
    names = graphs.export_fp32(model, sample, pad_id, raw)
    fusions = graphs.optimize_fp32(raw, work / MODEL_FILES["fp32"], model, options.external_data_bytes)
    shutil.rmtree(raw.parent)
    log.info("fp32 graph exported; fusions: %s", fusions or "none")
    # Provisional metadata: enough for BundleScorer to read the work folder as a bundle of what exists so far.
    draft = BundleMeta(
        model_id=f"{job.name}-{sha256_file(work / MODEL_FILES['fp32'])[:12]}",
        base_model=job.base_model,
        architecture=model.architecture,
        formatting=job.spec,
        onnx_inputs=names,
        precisions=["fp32"],
        pad_token_id=pad_id,
        data_fingerprint=job.data_fingerprint,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reward_head=RewardHead.from_dict(job.reward_head) if job.reward_head else None,
        objectives=list(job.objectives),
        weights=dict(job.weights),
    )
    fp32 = _scorer(work, draft, "fp32")
    parity = acceptance.check_parity(fp32, model, job.parity, pad_id)
    log.info("parity: max |onnx fp32 - torch| = %.2e over %d texts", parity.max_abs, parity.texts)
    if not parity.max_abs <= options.parity_atol:
        raise ExportError(
            f"ONNX fp32 differs from torch by {parity.max_abs:.2e} (> {options.parity_atol:.0e}); bundle not written"
        )
    int8_record: dict[str, Any] | None = None
    fp16_record: Fp16Check | None = None
    reports: dict[str, Any] = {}
    rewards: dict[str, Any] = {}
    if job.eval_files:
        reports["fp32"], rewards["fp32"] = evaluate(fp32, job.eval_files)
    precisions = ["fp32"]
    if job.int8 and not job.eval_files:
        raise ExportError("int8 needs evaluation pairs to check its winners against fp32's (--eval-data); not written")
    if job.int8 and (work / data_file(MODEL_FILES["fp32"])).exists():
        raise ExportError("int8 of a graph over 2 GB is not supported (export fp32 and fp16 only); not written")
    if job.int8:
        feeds = [pad([e], pad_id, names) for e in calib]
        int8 = choose_int8(work, draft, feeds, reports["fp32"], rewards["fp32"], job)
        reports["int8"], rewards["int8"], int8_record = int8.report, int8.rewards, int8.parity
        precisions.append("int8")
    stats = {p: reward_stats(r, job.objectives) for p, r in reports.items()}
    if job.fp16:
        # Without evaluation pairs the reward scale comes from the parity pairs' own rewards.
        parity_rewards = np.concatenate(score_pairs(fp32, job.parity)[:2]) if not stats else np.zeros(0)
        scale = (
            dataclasses.replace(draft, reward_stats=stats).reward_scale() if stats else float(np.std(parity_rewards))
        )
        scale = max(scale, 1e-6)
        # The floor (the parity bar) keeps a near-constant model's fp16 rounding from failing a relative limit.
        limit = max(options.fp16_tolerance * scale, ABS_FLOOR)
        fp16 = fp16_record = try_fp16(work, draft, job.parity, limit, options.external_data_bytes)
        if fp16.kept:
            precisions.append("fp16")
    shipped = dataclasses.replace(draft, precisions=precisions)
    summary = dict(job.provenance.get("summary", {})) | {"fusions": fusions}
    summary["export_seconds"] = round(time.perf_counter() - started, 1)
    meta = dataclasses.replace(
        shipped,
        reward_stats=stats,
        eval_metrics={"split": job.split, **reports},
        parity=ExportChecks(parity.max_abs, parity.texts, int8_record, fp16_record),
        # Probe rewards of every precision shipped, from the very files the bundle gets (the service re-scores them).
        reference=make_reference({p: _scorer(work, shipped, p) for p in precisions}),
        training=dict(job.provenance) | {"summary": summary},
    )
    if job.plot is not None and job.eval_files:
        pairs = [p for file_pairs in job.eval_files.values() for p in file_pairs]
        combined = {side: combine(r, meta) for side, r in rewards["fp32"].items()}
        write_plot(job.plot, pairs, combined, f"{meta.model_id} (fp32, held out)")
    files = [TOKENIZER_FILE] + [MODEL_FILES[p] for p in precisions]
    files += [data_file(MODEL_FILES[p]) for p in precisions if (work / data_file(MODEL_FILES[p])).exists()]
    sources = {name: work / name for name in files}
    bundle = write_bundle(job.out, meta, sources)
    log.info("bundle written to %s in %.0fs", bundle.path, time.perf_counter() - started)
    return bundle


def reward_stats(report: Mapping[str, Any], objectives: Sequence[str]) -> RewardStats:
    """BundleMeta.reward_stats of one precision: mean and std of the (combined) reward on the evaluation pairs, and of
    each objective's head (what `normalize` divides by)."""

    def of(metrics: Mapping[str, Any]) -> Moments:
        return Moments(float(metrics["reward_mean"]), max(float(metrics["reward_std"]), 1e-6))

    heads = tuple((name, of(report["objectives"][name])) for name in objectives)
    return RewardStats(of(report["overall"]), heads)


def _save_tokenizer(tokenizer: Any, spec: FormatSpec, path: Path) -> Formatter:
    """The backend tokenizer as the bundle's tokenizer.json (no padding or truncation: formatting owns those)."""
    backend(tokenizer).save(str(path))
    return Formatter.from_file(str(path), spec)


def _scorer(work: Path, meta: BundleMeta, precision: str) -> BundleScorer:
    """A CPU scorer of one graph in the work folder (named as in a bundle), without copying or hashing anything."""
    return BundleScorer(Bundle(work, meta), precision, device="cpu")


def choose_int8(
    work: Path,
    draft: BundleMeta,
    feeds: Sequence[dict[str, np.ndarray]],
    fp32_report: dict[str, Any],
    fp32_rewards: Mapping[str, np.ndarray],
    job: ExportJob,
) -> Int8Choice:
    """The fastest batch-invariant int8 scheme whose winners agree with fp32 on enough pairs, left in the work
    folder as model.int8.onnx; raises ExportError if no scheme passes.

    Agreement is measured on the evaluation pairs plus `job.agreement_extra`. The schemes share one calibration
    (they calibrate the same tensors), and a scheme that cannot pass is dropped as soon as that is certain (see
    acceptance.screen_int8), so a rejected scheme costs its quantisation and a fraction of an evaluation.
    """
    min_agreement = job.options.min_int8_agreement
    fp32_scorer = _scorer(work, draft, "fp32")
    pairs = [p for file_pairs in job.eval_files.values() for p in file_pairs] + list(job.agreement_extra)
    fp32 = dict(fp32_rewards)
    if job.agreement_extra:
        chosen, rejected, _ = score_pairs(fp32_scorer, job.agreement_extra)
        fp32 = {
            "chosen": np.concatenate([fp32["chosen"], chosen]),
            "rejected": np.concatenate([fp32["rejected"], rejected]),
        }
    cache = work / "calibration.json"
    cache.unlink(missing_ok=True)
    with_int8 = dataclasses.replace(draft, precisions=["fp32", "int8"])
    tried: list[dict[str, Any]] = []
    for scheme in INT8_SCHEMES:
        fp32_path, int8_path = work / MODEL_FILES["fp32"], work / MODEL_FILES["int8"]
        counts = graphs.quantize_int8(fp32_path, int8_path, feeds, scheme, cache=cache)
        int8_scorer = _scorer(work, with_int8, "int8")
        int8: dict[str, np.ndarray] | None
        if draft.objectives:  # the screen's early stop is about one reward's winners: score every pair, every head
            chosen, rejected, _ = score_pairs(int8_scorer, pairs)
            int8, flipped, screened = {"chosen": chosen, "rejected": rejected}, 0, len(pairs)
        else:
            int8, flipped, screened = acceptance.screen_int8(int8_scorer, pairs, fp32, min_agreement)
        result: dict[str, Any] = {"scheme": scheme, **counts, "pairs": len(pairs)}
        if int8 is None:
            # Every pair not yet scored could only agree, so this bounds the scheme's agreement from above.
            result |= {"agreement": (len(pairs) - flipped) / len(pairs), "flipped": flipped, "screened": screened}
            log.info("int8 %s vs fp32: rejected after %d of %d pairs: %s", scheme, screened, len(pairs), result)
            tried.append(result)
            continue
        scored = _by_file(job.eval_files, int8, fp32_report)
        report, rewards = build_report("int8", job.eval_files, scored, with_int8)
        result = acceptance.agreement(fp32, int8) | result
        result["accuracy_delta"] = report["overall"]["accuracy"] - fp32_report["overall"]["accuracy"]
        log.info("int8 %s vs fp32: %s", scheme, result)
        tried.append(result)
        if result["agreement"] >= min_agreement:
            result["speedup"] = round(acceptance.relative_speed(fp32_scorer, int8_scorer, job.eval_files), 3)
            log.info(
                "int8 runs %.2fx fp32 here (the service serves int8 by default only if it is faster)", result["speedup"]
            )
            return Int8Choice(report, rewards, result | {"tried": tried[:-1]})
    best = max(t["agreement"] for t in tried)
    raise ExportError(
        f"int8 agrees with fp32 on at most {best:.1%} of held-out pairs (< {min_agreement:.0%}) with "
        f"every scheme ({', '.join(INT8_SCHEMES)}); bundle not written (use --no-int8 to export fp32 only, "
        "then --resume to re-export without retraining)"
    )


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


def try_fp16(
    work: Path, draft: BundleMeta, pairs: Sequence[PreferencePair], limit: float, external_bytes: int
) -> Fp16Check:
    """Convert the fp32 graph to fp16 (for GPUs) and check it against fp32 on `pairs`.

    A graph the converter or ONNX Runtime cannot take in fp16 is left out with a warning, not an error: fp32
    serves everywhere.
    """
    try:
        graphs.convert_fp16(work / MODEL_FILES["fp32"], work / MODEL_FILES["fp16"], external_bytes)
        with_fp16 = dataclasses.replace(draft, precisions=["fp32", "fp16"])
        check = acceptance.check_fp16(_scorer(work, draft, "fp32"), _scorer(work, with_fp16, "fp16"), pairs, limit)
    except Exception as e:  # an op without an fp16 form: not worth failing a fit over
        error = f"{type(e).__name__}: {str(e).strip()[:300]}"
        log.warning("no fp16 graph in this bundle: %s", error)
        return Fp16Check(float("nan"), limit, 0, error)
    log.info(
        "fp16 vs fp32: max |diff| %.3g over %d texts (limit %.3g): %s",
        check.max_abs_diff,
        check.texts,
        limit,
        check.kept,
    )
    return check
