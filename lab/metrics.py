"""Rates with Wilson 95 % intervals: TPR, FPR, introspection, forced identification, vector-control rates.

Definitions (PROTOCOL.md): TPR = P(claim | injection), FPR = P(claim | no-injection control), introspection =
P(claim ∧ correct identification | injection), forced identification = P(identify | prefilled claim, injection),
balanced accuracy = (TPR + 1 − FPR) / 2. A vector control's rate is P(claim | that control vector injected).
Rows whose verdict is unknown (an unparseable judge answer) are left out of every denominator and counted in
`n_unparsed`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(proportion, low, high) of k successes in n trials; (nan, 0, 1) when n = 0."""
    if n == 0:
        return float("nan"), 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the edges (float error gives ~1e-17 otherwise)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return p, lo, hi


def _rate(success: pd.Series) -> tuple[int, int, float, float, float]:
    s = success.dropna().astype(bool)
    k, n = int(s.sum()), int(len(s))
    return (k, n, *wilson(k, n))


def _known(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["detected"].notna()]


def detection_rate(df: pd.DataFrame) -> tuple[float, float, float]:
    """TPR: P(claim | injection), unforced injected trials."""
    return _rate(_known(df[(df.kind == "injection") & ~df.forced])["detected"])[2:]


def false_positive_rate(df: pd.DataFrame) -> tuple[float, float, float]:
    """FPR: P(claim | no injection)."""
    return _rate(_known(df[(df.kind == "control") & ~df.forced])["detected"])[2:]


def introspection_rate(df: pd.DataFrame) -> tuple[float, float, float]:
    sub = _known(df[(df.kind == "injection") & ~df.forced])
    return _rate(sub["detected"].astype(bool) & sub["identified"].fillna(False).astype(bool))[2:]


def forced_identification_rate(df: pd.DataFrame) -> tuple[float, float, float]:
    sub = df[(df.kind == "injection") & df.forced]
    return _rate(sub["identified"])[2:]


def summarize(df: pd.DataFrame) -> dict[str, float]:
    """One row of rates (with `_lo`/`_hi` bounds and counts) for a set of trials."""
    out: dict[str, float] = {}
    inj = _known(df[(df.kind == "injection") & ~df.forced])
    ctl = _known(df[(df.kind == "control") & ~df.forced])
    parts = {
        "tpr": inj["detected"],
        "fpr": ctl["detected"],
        "introspection": inj["detected"].astype(bool) & inj["identified"].fillna(False).astype(bool),
        "forced_id": df[(df.kind == "injection") & df.forced]["identified"],
    }
    for kind in ("random", "norm_matched", "shuffled"):
        sub = _known(df[(df.kind == kind) & ~df.forced])
        if len(sub):
            parts[f"{kind}_rate"] = sub["detected"]
    for name, series in parts.items():
        k, n, p, lo, hi = _rate(series)
        out.update({name: p, f"{name}_lo": lo, f"{name}_hi": hi, f"n_{name}": n})
    tpr, fpr = out["tpr"], out["fpr"]
    out["balanced_accuracy"] = (tpr + 1 - fpr) / 2 if not (math.isnan(tpr) or math.isnan(fpr)) else float("nan")
    out["n_unparsed"] = int(df["detected"].isna().sum())
    out["coherence"] = float(df["coherent"].dropna().astype(bool).mean()) if df["coherent"].notna().any() else math.nan
    return out


def rates(df: pd.DataFrame, by: Sequence[str] = ("layer", "strength")) -> pd.DataFrame:
    """`summarize` per group (e.g. per layer × strength, per concept); `by=()` gives one aggregate row."""
    if not by:
        return pd.DataFrame([summarize(df)])
    rows = [dict(zip(by, key if isinstance(key, tuple) else (key,))) | summarize(g)
            for key, g in df.groupby(list(by), sort=True)]
    return pd.DataFrame(rows)
