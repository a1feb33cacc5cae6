"""Majority vote per item, percent agreement, Krippendorff's alpha (nominal) and each annotator's agreement."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Votes = Mapping[int, Sequence[tuple[str, Hashable]]]  # item -> [(annotator, label)]


def group_votes(rows: Iterable[tuple[int, str, Hashable]]) -> dict[int, list[tuple[str, Hashable]]]:
    grouped: dict[int, list[tuple[str, Hashable]]] = defaultdict(list)
    for item, annotator, label in rows:
        grouped[item].append((annotator, label))
    return dict(grouped)


def majority(labels: Sequence[Hashable]) -> Hashable | None:
    """The label with strictly the most votes; None when the top is shared (1 vs 1) or there are no votes."""
    counts = Counter(labels).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


@dataclass(frozen=True)
class Quorum:
    """How many votes a pair gets. Every pair gets `per_item`; a pair whose votes do not settle it (the leading
    label needs `majority` votes and strictly more than any other) gets one more annotator at a time, up to `most`.
    Only disputed pairs grow, so raising the bar does not reopen the pairs already agreed on."""

    per_item: int
    majority: int
    most: int

    @classmethod
    def of(cls, per_item: int, majority: int | None = None, most: int | None = None) -> Quorum:
        quorum = cls(per_item, per_item // 2 + 1 if majority is None else majority, most or per_item + 2)
        if not 1 <= quorum.per_item <= quorum.most or not 1 <= quorum.majority <= quorum.most:
            raise ValueError(
                f"need 1 <= annotations per item ({quorum.per_item}) <= most ({quorum.most}) and "
                f"1 <= majority ({quorum.majority}) <= most"
            )
        return quorum

    def settled(self, labels: Sequence[Hashable]) -> bool:
        top = Counter(labels).most_common(2)
        return bool(top) and top[0][1] >= self.majority and (len(top) == 1 or top[0][1] > top[1][1])

    def disputed(self, labels: Sequence[Hashable]) -> bool:
        return len(labels) >= self.per_item and not self.settled(labels)

    def slots(self, labels: Sequence[Hashable]) -> int:
        """Votes this pair should end up with, given the ones it has."""
        return min(len(labels) + 1, self.most) if self.disputed(labels) else self.per_item

    def report(self, votes: Votes) -> dict[str, int]:
        """What happened to the pairs whose first `per_item` votes did not settle them (votes in answer order)."""
        split = resolved = waiting = unresolved = 0
        for item_votes in votes.values():
            labels = [label for _, label in item_votes]
            if len(labels) < self.per_item or self.settled(labels[: self.per_item]):
                continue
            split += 1
            if self.settled(labels):
                resolved += 1
            elif len(labels) < self.most:
                waiting += 1
            else:
                unresolved += 1
        return {
            "annotations_per_item": self.per_item,
            "majority": self.majority,
            "most_annotations": self.most,
            "split_at_first": split,
            "resolved_by_more_votes": resolved,
            "waiting_for_votes": waiting,
            "unresolved_at_most": unresolved,
        }


def percent_agreement(votes: Votes) -> float | None:
    """Mean over items with 2+ votes of the share of annotator pairs that gave the same label."""
    shares = []
    for item_votes in votes.values():
        labels = [label for _, label in item_votes]
        m = len(labels)
        if m < 2:
            continue
        same = sum(c * (c - 1) for c in Counter(labels).values())
        shares.append(same / (m * (m - 1)))
    return sum(shares) / len(shares) if shares else None


def krippendorff_alpha(votes: Votes) -> float | None:
    """Nominal Krippendorff's alpha, 1 − D_o / D_e, from the coincidence matrix (Krippendorff 2011).

    Items with one vote are not pairable and drop out. None when undefined: no pairable votes, or a single
    label everywhere (no expected disagreement to compare with).
    """
    coincidence: defaultdict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for item_votes in votes.values():
        labels = [label for _, label in item_votes]
        m = len(labels)
        if m < 2:
            continue
        counts = Counter(labels)
        for c, nc in counts.items():
            for k, nk in counts.items():
                pairs = nc * (nc - 1) if c == k else nc * nk
                coincidence[(c, k)] += pairs / (m - 1)
    totals: defaultdict[Hashable, float] = defaultdict(float)
    for (c, _), value in coincidence.items():
        totals[c] += value
    n = sum(totals.values())
    if n <= 1:
        return None
    observed = sum(v for (c, k), v in coincidence.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k) / (n - 1)
    if expected == 0:
        return None
    return 1.0 - observed / expected


@dataclass
class AnnotatorAgreement:
    name: str
    votes: int
    compared: int  # votes on items where the other annotators had a majority
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


def per_annotator(votes: Votes) -> list[AnnotatorAgreement]:
    """Each annotator against the majority of the *other* annotators of the same items (leave-one-out, so a
    careless annotator cannot agree with a majority they make up themselves)."""
    found: dict[str, AnnotatorAgreement] = {}
    for item_votes in votes.values():
        for i, (name, label) in enumerate(item_votes):
            row = found.setdefault(name, AnnotatorAgreement(name, 0, 0, 0))
            row.votes += 1
            others = majority([lab for j, (_, lab) in enumerate(item_votes) if j != i])
            if others is not None:
                row.compared += 1
                row.agreed += int(others == label)
    return sorted(found.values(), key=lambda r: (r.rate if r.rate is not None else 2.0, r.name))


def summary(votes: Votes) -> dict[str, Any]:
    """Agreement figures for the admin page and the export report."""
    alpha = krippendorff_alpha(votes)
    agreement = percent_agreement(votes)
    return {
        "items_with_votes": len(votes),
        "items_with_2_or_more_votes": sum(1 for v in votes.values() if len(v) >= 2),
        "percent_agreement": None if agreement is None else round(agreement, 4),
        "krippendorff_alpha": None if alpha is None else round(alpha, 4),
        "annotators": [
            {
                "name": a.name,
                "votes": a.votes,
                "compared_with_majority": a.compared,
                "agreement_with_majority": None if a.rate is None else round(a.rate, 4),
            }
            for a in per_annotator(votes)
        ],
    }
