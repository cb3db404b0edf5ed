"""Agreement maths between a judge and reference labels: confusion counts, accuracy and Cohen's kappa (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Confusion:
    """2×2 counts with the reference (hand label) as the truth: tp = both 1, fp = judge 1 / label 0, …"""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def confusion(reference: Sequence[bool], predicted: Sequence[bool]) -> Confusion:
    """Confusion counts of `predicted` against `reference` (equal-length boolean sequences)."""
    if len(reference) != len(predicted):
        raise ValueError(f"length mismatch: {len(reference)} reference vs {len(predicted)} predicted")
    pairs = list(zip(map(bool, reference), map(bool, predicted)))
    return Confusion(
        tp=pairs.count((True, True)),
        fp=pairs.count((False, True)),
        fn=pairs.count((True, False)),
        tn=pairs.count((False, False)),
    )


def accuracy(c: Confusion) -> float:
    return (c.tp + c.tn) / c.n if c.n else float("nan")


def cohen_kappa(c: Confusion) -> float:
    """Cohen's kappa (p_o − p_e) / (1 − p_e); 1.0 when both raters are constant and agree, NaN on no data."""
    if not c.n:
        return float("nan")
    p_o = (c.tp + c.tn) / c.n
    p_yes = ((c.tp + c.fn) / c.n) * ((c.tp + c.fp) / c.n)
    p_no = ((c.fp + c.tn) / c.n) * ((c.fn + c.tn) / c.n)
    p_e = p_yes + p_no
    if p_e == 1.0:
        return 1.0 if p_o == 1.0 else 0.0
    return (p_o - p_e) / (1.0 - p_e)


def format_confusion(c: Confusion, label: str) -> str:
    """A small text table: rows = hand label, columns = judge."""
    return "\n".join(
        [f"{label:<12} judge=1 judge=0", f"{'label=1':<12} {c.tp:>7} {c.fn:>7}", f"{'label=0':<12} {c.fp:>7} {c.tn:>7}"]
    )
