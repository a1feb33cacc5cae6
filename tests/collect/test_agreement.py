"""Majority vote, percent agreement, Krippendorff's alpha (checked on Krippendorff's own example) and per-annotator."""

from __future__ import annotations

import pytest

from collect.agreement import group_votes, krippendorff_alpha, majority, per_annotator, percent_agreement


def test_krippendorff_alpha_matches_the_published_nominal_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units, nominal alpha 0.743.
    table = {
        "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    }
    rows = [(u, coder, v) for coder, values in table.items() for u, v in enumerate(values) if v is not None]
    assert krippendorff_alpha(group_votes(rows)) == pytest.approx(0.743, abs=5e-4)


def test_agreement_figures_and_leave_one_out_annotator_agreement() -> None:
    votes = group_votes(
        [
            (1, "ann", "first"),
            (1, "bob", "first"),
            (1, "eve", "second"),
            (2, "ann", "second"),
            (2, "bob", "second"),
            (2, "eve", "first"),
            (3, "ann", "tie"),
            (3, "bob", "tie"),
            (4, "ann", "first"),
        ]
    )
    # item 1: 1 agreeing pair of 3; item 2 likewise; item 3 all agree; item 4 has one vote and is not counted.
    assert percent_agreement(votes) == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    alpha = krippendorff_alpha(votes)
    assert alpha is not None and -1 < alpha < 1
    rates = {a.name: (a.rate, a.compared) for a in per_annotator(votes)}
    assert rates["eve"] == (0.0, 2) and rates["ann"][0] == 1.0 and rates["bob"][0] == 1.0
    assert per_annotator(votes)[0].name == "eve"  # the least agreeing annotator is listed first
    assert majority(["first", "second"]) is None and majority(["tie", "tie", "first"]) == "tie"
    assert krippendorff_alpha(group_votes([(1, "a", "x"), (1, "b", "x")])) is None  # no variation: undefined
