"""export_bundle(job): a torch reward model -> checked ONNX graphs -> evaluated bundle, written only if it passes.

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
from models.reference import ABS_FLOOR, make_reference
from models.runtime import BundleScorer

from . import acceptance, graphs
from .data import PreferencePair
from .evaluate import build_report, evaluate, score_pairs, write_plot
from .model import RewardModel

log = logging.getLogger("training.export")
# Batch-invariant int8 schemes, fastest first; the export keeps the first that agrees with fp32 well enough.
INT8_SCHEMES = ("square+contracting", "square")


class ExportError(RuntimeError):
    """The exported graphs failed a parity or agreement check; nothing was written to the bundle folder."""


@dataclass(frozen=True)
class ExportOptions:
    """Which precisions to try and the bars they must clear."""

    int8: bool = True
    fp16: bool = True
    parity_atol: float = 1e-4
    min_int8_agreement: float = 0.98
    fp16_tolerance: float = 0.01  # in units of the fp32 reward std
    plot: Path | None = None
    external_bytes: int = graphs.EXTERNAL_DATA_BYTES  # graphs with more weight bytes keep them in a data file


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
    options: ExportOptions = ExportOptions()


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
    fusions = graphs.optimize_fp32(raw, work / MODEL_FILES["fp32"], model, options.external_bytes)
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
        reward_head=dict(job.reward_head),
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
    checks: dict[str, Any] = parity.to_dict()
    reports: dict[str, Any] = {}
    rewards: dict[str, Any] = {}
    if job.eval_files:
        reports["fp32"], rewards["fp32"] = evaluate(fp32, job.eval_files)
    precisions = ["fp32"]
    if options.int8 and not job.eval_files:
        raise ExportError("int8 needs evaluation pairs to check its winners against fp32's (--eval-data); not written")
    if options.int8 and (work / data_file(MODEL_FILES["fp32"])).exists():
        raise ExportError("int8 of a graph over 2 GB is not supported (export fp32 and fp16 only); not written")
    if options.int8:
        feeds = [pad([e], pad_id, names) for e in calib]
        int8 = choose_int8(work, draft, feeds, reports["fp32"], rewards["fp32"], job)
        reports["int8"], rewards["int8"], checks["int8"] = int8.report, int8.rewards, int8.parity
        precisions.append("int8")
    stats = {p: reward_stats(r) for p, r in reports.items()}
    if options.fp16:
        # Without evaluation pairs the reward scale comes from the parity pairs' own rewards.
        parity_rewards = np.concatenate(score_pairs(fp32, job.parity)[:2]) if not stats else np.zeros(0)
        scale = (
            dataclasses.replace(draft, reward_stats=stats).reward_scale() if stats else float(np.std(parity_rewards))
        )
        scale = max(scale, 1e-6)
        # The floor (the parity bar) keeps a near-constant model's fp16 rounding from failing a relative limit.
        limit = max(options.fp16_tolerance * scale, ABS_FLOOR)
        fp16 = try_fp16(work, draft, job.parity, limit, options.external_bytes)
        checks["fp16"] = fp16.to_dict()
        if fp16.kept:
            precisions.append("fp16")
    shipped = dataclasses.replace(draft, precisions=precisions)
    summary = dict(job.provenance.get("summary", {})) | {"fusions": fusions}
    summary["export_seconds"] = round(time.perf_counter() - started, 1)
    meta = dataclasses.replace(
        shipped,
        reward_stats=stats,
        eval_metrics={"split": job.split, **reports},
        parity=checks,
        # Probe rewards of every precision shipped, from the very files the bundle gets (the service re-scores them).
        reference=make_reference({p: _scorer(work, shipped, p) for p in precisions}),
        training=dict(job.provenance) | {"summary": summary},
    )
    if options.plot is not None and job.eval_files:
        pairs = [p for file_pairs in job.eval_files.values() for p in file_pairs]
        combined = {side: combine(r, meta) for side, r in rewards["fp32"].items()}
        write_plot(options.plot, pairs, combined, f"{meta.model_id} (fp32, held out)")
    files = [TOKENIZER_FILE] + [MODEL_FILES[p] for p in precisions]
    files += [data_file(MODEL_FILES[p]) for p in precisions if (work / data_file(MODEL_FILES[p])).exists()]
    sources = {name: work / name for name in files}
    bundle = write_bundle(job.out, meta, sources)
    log.info("bundle written to %s in %.0fs", bundle.path, time.perf_counter() - started)
    return bundle


def reward_stats(report: Mapping[str, Any]) -> dict[str, Any]:
    """BundleMeta.reward_stats of one precision: mean and std of the (combined) reward on the evaluation pairs, and of
    each objective's head (what `normalize` divides by)."""

    def of(metrics: Mapping[str, Any]) -> dict[str, float]:
        return {"mean": float(metrics["reward_mean"]), "std": max(float(metrics["reward_std"]), 1e-6)}

    stats: dict[str, Any] = of(report["overall"])
    if "objectives" in report:
        stats["objectives"] = {name: of(m) for name, m in report["objectives"].items()}
    return stats


def _save_tokenizer(tokenizer: Any, spec: FormatSpec, path: Path) -> Formatter:
    """The backend tokenizer as the bundle's tokenizer.json (no padding or truncation: formatting owns those)."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(path))
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
) -> acceptance.Fp16Check:
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
        return acceptance.Fp16Check(float("nan"), limit, 0, error)
    log.info(
        "fp16 vs fp32: max |diff| %.3g over %d texts (limit %.3g): %s",
        check.max_abs_diff,
        check.texts,
        limit,
        check.kept,
    )
    return check


def main(argv: Sequence[str] | None = None) -> int:
    """python -m training.export: an existing Hugging Face reward model (folder or hub id) -> a checked bundle."""
    import argparse
    import sys

    from models.reference import PROBES

    from .data import DataError, load_pairs, sample_pairs
    from .imported import FORMATTINGS, ImportError_, load_reward_model

    parser = argparse.ArgumentParser(prog="python -m training.export", description=main.__doc__)
    parser.add_argument("--model", required=True, help="Hugging Face folder or hub id of a *ForSequenceClassification.")
    parser.add_argument("--out", required=True, help="Bundle folder to write.")
    parser.add_argument(
        "--formatting",
        choices=FORMATTINGS,
        default="auto",
        help="How text becomes tokens: auto (encoders: text pair; decoders: their chat template, else "
        "plain), pair, chat or plain.",
    )
    parser.add_argument("--max-length", type=int, help="Tokens per text (default: the model's, at most 4096).")
    parser.add_argument(
        "--precisions",
        default="fp32,fp16",
        help="Graphs to ship, comma-separated: fp32 (always), int8 (CPU; needs --eval-data), fp16 (GPU).",
    )
    parser.add_argument(
        "--eval-data",
        nargs="+",
        help="Preference files: metrics, parity, int8 checks, and the reward "
        "statistics `normalize` uses (without them the bundle has none and refuses `normalize`).",
    )
    parser.add_argument(
        "--calibration-data",
        nargs="+",
        help="Preference files for int8 calibration and, without --eval-data, the reward statistics.",
    )
    parser.add_argument("--label-index", type=int, help="Which logit is the reward, for a model with several labels.")
    parser.add_argument(
        "--append-eos",
        action="store_true",
        help="Append EOS to decoder texts (models trained with TRL on plain, non-chat text).",
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="Let transformers run the model's own code.")
    parser.add_argument("--skip-invalid", action="store_true", help="Skip malformed records in the data files.")
    parser.add_argument("--parity-atol", type=float, default=1e-4, help="Max |ONNX fp32 − transformers|.")
    parser.add_argument("--min-int8-agreement", type=float, default=0.98)
    parser.add_argument("--fp16-tolerance", type=float, default=0.01, help="In units of the fp32 reward std.")
    parser.add_argument(
        "--external-data-bytes",
        type=int,
        default=graphs.EXTERNAL_DATA_BYTES,
        help="Graphs with more weight bytes keep their weights in one data file beside them.",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    precisions = {p.strip() for p in args.precisions.split(",") if p.strip()}
    if not precisions <= set(MODEL_FILES):
        print(f"error: --precisions: unknown {', '.join(sorted(precisions - set(MODEL_FILES)))}", file=sys.stderr)
        return 2
    try:
        imported = load_reward_model(
            args.model, args.formatting, args.max_length, args.label_index, args.append_eos, args.trust_remote_code
        )
        eval_files = {f: load_pairs([f], skip_invalid=args.skip_invalid) for f in args.eval_data or []}
        calibration = load_pairs(args.calibration_data, skip_invalid=args.skip_invalid) if args.calibration_data else []
    except (ImportError_, DataError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    split = "eval_data" if eval_files else "calibration_data" if calibration else "none"
    if not eval_files and calibration:
        eval_files = {"calibration": calibration}
    pairs = [p for file_pairs in eval_files.values() for p in file_pairs]
    # Without data, parity is checked on the reference probes (texts of every kind, one past any max length).
    probes = [PreferencePair(p, c, PROBES[(i + 1) % len(PROBES)][1], source="probe") for i, (p, c) in enumerate(PROBES)]
    out = Path(args.out)
    job = ExportJob(
        model=imported.model,
        tokenizer=imported.tokenizer,
        spec=imported.spec,
        out=out,
        work=Path(f"{out}.work") / "export",
        name=out.name,
        base_model=args.model,
        calibration=sample_pairs(calibration or pairs, 128, args.seed),
        parity=sample_pairs(pairs, 64, args.seed) or probes,
        eval_files=eval_files,
        split=split,
        pad_id=imported.pad_id,
        reward_head=imported.reward_head,
        objectives=imported.objectives,
        provenance={"imported": dict(vars(args))},
        options=ExportOptions(
            int8="int8" in precisions,
            fp16="fp16" in precisions,
            parity_atol=args.parity_atol,
            min_int8_agreement=args.min_int8_agreement,
            fp16_tolerance=args.fp16_tolerance,
            plot=Path(f"{out}.work") / "eval.png" if eval_files else None,
            external_bytes=args.external_data_bytes,
        ),
    )
    try:
        bundle = export_bundle(job)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"bundle {bundle.path}: {bundle.meta.model_id}, precisions {', '.join(bundle.meta.precisions)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
