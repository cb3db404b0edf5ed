"""Judge-corrected rates: a judge's sensitivity and specificity, measured on hand-labelled answers, turn an observed
claim rate p into an estimate of the true rate (Rogan–Gladen):

    θ = (p + specificity − 1) / (sensitivity + specificity − 1), clipped to [0, 1]

Sensitivity = P(judge says yes | label yes), specificity = P(judge says no | label no), per verdict type:
`detection` (the judge's `detected` against the label `detected`; corrects TPR, FPR and every vector-control rate)
and `identification` (judge `detected ∧ identified` against the label `identified`; corrects introspection and
forced identification). A judge no better than chance (sensitivity + specificity − 1 ≤ 0) cannot be corrected for
and is a LabError.

Interval: Monte Carlo with a fixed seed over the three proportions' Jeffreys posteriors, Beta(k + ½, n − k + ½) for
the trial rate p and for sensitivity and specificity from the calibration counts, so both the trial counts and the
calibration counts widen it (a parametric bootstrap that stays informative at 0/n and n/n). θ is recomputed and
clipped per draw; a draw whose sensitivity + specificity − 1 ≤ 0 has no θ and counts as 0 for the lower and 1 for the
upper bound (conservative). The bounds are the 2.5 % and 97.5 % quantiles.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lab.errors import LabError

LABEL_COLUMNS = ("concept", "response", "detected", "identified")  # the jobs.judge_agreement CSV
DEFAULT_LABELS = Path(__file__).resolve().parents[1] / "data" / "judge_labels.csv"
DETECTION_RATES = ("tpr", "fpr", "random_rate", "norm_matched_rate", "shuffled_rate", "negative_rate")
IDENTIFICATION_RATES = ("introspection", "forced_id")
DRAWS, SEED = 4000, 0


@dataclass(frozen=True)
class Calibration:
    """A judge's 2×2 counts against hand labels for one verdict type (label = truth)."""

    verdict: str  # "detection" | "identification"
    tp: int
    fn: int
    tn: int
    fp: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")

    def check(self) -> None:
        if not (self.tp + self.fn) or not (self.tn + self.fp):
            raise LabError(
                f"judge calibration ({self.verdict}) needs labelled positives and negatives, got "
                f"{self.tp + self.fn} positive / {self.tn + self.fp} negative"
            )
        j = self.sensitivity + self.specificity - 1
        if j <= 0:
            raise LabError(
                f"judge is no better than chance at {self.verdict} (sensitivity {self.sensitivity:.2f} "
                f"+ specificity {self.specificity:.2f} − 1 = {j:.2f} ≤ 0): its rates cannot be corrected"
            )


def corrected(p: float, sensitivity: float, specificity: float) -> float:
    """Rogan–Gladen θ clipped to [0, 1]; LabError when the judge is no better than chance."""
    j = sensitivity + specificity - 1
    if j <= 0:
        raise LabError(f"judge is no better than chance (sensitivity + specificity − 1 = {j:.2f} ≤ 0)")
    return float(min(1.0, max(0.0, (p + specificity - 1) / j)))


def corrected_interval(
    k: int, n: int, cal: Calibration, draws: int = DRAWS, seed: int = SEED
) -> tuple[float, float, float]:
    """(θ, low, high) for k claims in n trials under a judge with calibration `cal` (see the module docstring)."""
    cal.check()
    if n == 0:
        return float("nan"), 0.0, 1.0
    theta = corrected(k / n, cal.sensitivity, cal.specificity)
    rng = np.random.default_rng(seed)
    p = rng.beta(k + 0.5, n - k + 0.5, draws)
    se = rng.beta(cal.tp + 0.5, cal.fn + 0.5, draws)
    sp = rng.beta(cal.tn + 0.5, cal.fp + 0.5, draws)
    j = se + sp - 1
    ok = j > 0
    t = np.clip((p + sp - 1) / np.where(ok, j, 1.0), 0.0, 1.0)
    lo = float(np.quantile(np.where(ok, t, 0.0), 0.025))
    hi = float(np.quantile(np.where(ok, t, 1.0), 0.975))
    return theta, lo, hi


def read_labels(path: str | Path) -> list[dict[str, Any]]:
    """Rows of the labels CSV with 0/1 labels as bools; a bad file, column or label raises a one-line LabError."""
    p = Path(path)
    if not p.is_file():
        raise LabError(f"labels file not found: {p}")
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LabError(f"labels file {p} lacks column '{missing[0]}' (needs {', '.join(LABEL_COLUMNS)})")
        rows = []
        for line, row in enumerate(reader, start=2):
            labels = {k: _label(row[k], k, p, line) for k in ("detected", "identified")}
            if labels["identified"] and not labels["detected"]:
                raise LabError(f"{p} row {line}: identified=1 needs detected=1")
            rows.append(
                {"concept": (row["concept"] or "").strip() or None, "response": row["response"] or "", **labels}
            )
    if not rows:
        raise LabError(f"labels file {p} has no rows")
    return rows


def _label(value: str | None, column: str, path: Path, line: int) -> bool:
    v = (value or "").strip()
    if v not in ("0", "1"):
        raise LabError(f"{path} row {line}: column '{column}' must be 0 or 1, got '{v}'")
    return v == "1"


def calibrate(judge: Any, labels: str | Path | Sequence[Mapping[str, Any]]) -> dict[str, Calibration]:
    """Grade the labelled answers with `judge` and count its agreement per verdict type. Unparseable verdicts count
    as "no" (what the rates do with them differs, but a judge that cannot answer has not detected anything)."""
    from lab.judges import Answer

    rows = read_labels(labels) if isinstance(labels, (str, Path)) else list(labels)
    verdicts = judge.grade([Answer(r["concept"], r["response"]) for r in rows])
    det = [v.detected is True for v in verdicts]
    ide = [v.detected is True and v.identified is True for v in verdicts]
    out = {}
    for name, label, pred in (("detection", "detected", det), ("identification", "identified", ide)):
        pairs = [(bool(r[label]), p) for r, p in zip(rows, pred)]
        out[name] = Calibration(
            name,
            tp=pairs.count((True, True)),
            fn=pairs.count((True, False)),
            tn=pairs.count((False, False)),
            fp=pairs.count((False, True)),
        )
    out["detection"].check()  # a judge that cannot tell detections apart is an error before any rate is shown
    return out


def for_judge(judge_cfg: Any) -> dict[str, Calibration] | None:
    """The calibration a judge config names (`judge.calibration`), graded with that judge; None when off."""
    path = getattr(judge_cfg, "calibration", None)
    if not path:
        return None
    from lab.judges import make_judge

    return calibrate(make_judge(judge_cfg.name, **judge_cfg.options), path)


def correct_row(row: Mapping[str, Any], cal: Mapping[str, Calibration]) -> dict[str, float]:
    """`<rate>_corrected`, `_lo`, `_hi` for every rate in a `metrics.summarize` row that has k_/n_ counts."""
    out: dict[str, float] = {}
    for names, verdict in ((DETECTION_RATES, "detection"), (IDENTIFICATION_RATES, "identification")):
        if verdict not in cal:
            continue
        for name in names:
            k, n = row.get(f"k_{name}"), row.get(f"n_{name}")
            if k is None or n is None or n != n:
                continue
            theta, lo, hi = corrected_interval(int(k), int(n), cal[verdict])
            out |= {
                f"{name}_corrected": theta,
                f"{name}_corrected_lo": lo,
                f"{name}_corrected_hi": hi,
                f"n_{name}_corrected": int(n),
            }
    return out


def describe_calibration(cal: Mapping[str, Calibration]) -> str:
    return "; ".join(
        f"{c.verdict}: sensitivity {c.sensitivity:.2f} ({c.tp}/{c.tp + c.fn}), specificity "
        f"{c.specificity:.2f} ({c.tn}/{c.tn + c.fp})"
        for c in cal.values()
    )
