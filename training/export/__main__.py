"""python -m training.export: an existing Hugging Face reward model (folder or hub id) -> a checked bundle, through the
same export_bundle as training.fit (options: training.config.ImportConfig and ExportOptions)."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from models.bundle import MODEL_FILES
from models.reference import PROBES

from ..config import parse_import
from ..data import DataError, PreferencePair, load_pairs, sample_pairs
from ..imported import ImportRefused, load_reward_model
from . import ExportError, ExportJob, export_bundle


def main(argv: Sequence[str] | None = None) -> int:
    cfg, options = parse_import(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    precisions = {p.strip() for p in cfg.precisions.split(",") if p.strip()}
    if not precisions <= set(MODEL_FILES):
        print(f"error: --precisions: unknown {', '.join(sorted(precisions - set(MODEL_FILES)))}", file=sys.stderr)
        return 2
    try:
        imported = load_reward_model(
            cfg.model,
            cfg.formatting,
            cfg.max_length,
            cfg.label_index,
            cfg.append_eos,
            cfg.trust_remote_code,
            cfg.truncation,
        )
        eval_files = {f: load_pairs([f], skip_invalid=cfg.skip_invalid) for f in cfg.eval_data or []}
        calibration = load_pairs(cfg.calibration_data, skip_invalid=cfg.skip_invalid) if cfg.calibration_data else []
    except (ImportRefused, DataError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    split = "eval_data" if eval_files else "calibration_data" if calibration else "none"
    if not eval_files and calibration:
        eval_files = {"calibration": calibration}
    pairs = [p for file_pairs in eval_files.values() for p in file_pairs]
    # Without data, parity is checked on the reference probes (texts of every kind, one past any max length).
    probes = [PreferencePair(p, c, PROBES[(i + 1) % len(PROBES)][1], source="probe") for i, (p, c) in enumerate(PROBES)]
    out = Path(cfg.out)
    job = ExportJob(
        model=imported.model,
        tokenizer=imported.tokenizer,
        spec=imported.spec,
        out=out,
        work=Path(f"{out}.work") / "export",
        name=out.name,
        base_model=cfg.model,
        calibration=sample_pairs(calibration or pairs, 128, cfg.seed),
        parity=sample_pairs(pairs, 64, cfg.seed) or probes,
        eval_files=eval_files,
        split=split,
        pad_id=imported.pad_id,
        reward_head=imported.reward_head,
        objectives=imported.objectives,
        provenance={"imported": dataclasses.asdict(cfg) | {"options": dataclasses.asdict(options)}},
        options=options,
        int8="int8" in precisions,
        fp16="fp16" in precisions,
        plot=Path(f"{out}.work") / "eval.png" if eval_files else None,
    )
    try:
        bundle = export_bundle(job)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"bundle {bundle.path}: {bundle.meta.model_id}, precisions {', '.join(bundle.meta.precisions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
