"""Reference probes (models.reference): recorded by the export, reproduced exactly on the same stack, floors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from models.bundle import read_bundle
from models.reference import PROBES, check_reference, ids_digest, make_reference
from models.runtime import BundleScorer


def test_a_reference_made_here_is_reproduced_exactly(tiny_bundle: Path) -> None:
    bundle = read_bundle(tiny_bundle)
    scorers = {p: BundleScorer(bundle, p, device="cpu") for p in bundle.meta.precisions}
    made = make_reference(scorers)
    assert made == bundle.meta.reference  # the export's own probes, re-made from the bundle's files
    assert len(made.prompts) == len(PROBES) and set(made.rewards) == set(bundle.meta.precisions)
    std = bundle.meta.reward_scale()
    for precision, scorer in scorers.items():
        check = check_reference(scorer, made, std)
        assert check is not None and check.ok and check.max_abs_diff == 0.0 and check.against == precision


def test_tokens_drift_and_limits(tiny_bundle: Path) -> None:
    bundle = read_bundle(tiny_bundle)
    scorer = BundleScorer(bundle, "fp32", device="cpu")
    reference = bundle.meta.reference
    assert reference is not None
    assert check_reference(scorer, None, 1.0) is None  # an old bundle without probes is not checked
    near_constant = check_reference(scorer, reference, std=1e-9)
    assert near_constant is not None and near_constant.ok and near_constant.limit == 1e-4  # rounding still passes
    shifted = dataclasses.replace(reference, rewards={"fp32": [r + 0.5 for r in reference.rewards["fp32"]]})
    off = check_reference(scorer, shifted, std=1.0)
    assert off is not None and not off.ok and "does not reproduce" in off.problem()
    assert abs(off.max_abs_diff - 0.5) < 1e-6
    retokenised = check_reference(scorer, dataclasses.replace(reference, ids_sha256=ids_digest([])), std=1.0)
    assert retokenised is not None and not retokenised.tokens_match and "tokenise differently" in retokenised.problem()
    int8_only = check_reference(BundleScorer(bundle, "int8", device="cpu"), reference, std=1.0)
    assert int8_only is not None and int8_only.against == "int8"
