"""Rates with Wilson 95 % intervals: TPR, FPR, introspection, forced identification, vector-control rates.

Definitions (PROTOCOL.md): TPR = P(claim | injection), FPR = P(claim | no-injection control), introspection =
P(claim ∧ correct identification | injection), forced identification = P(identify | prefilled claim, injection),
balanced accuracy = (TPR + 1 − FPR) / 2. A vector control's rate is P(claim | that control vector injected).
Rows whose verdict is unknown (an unparseable judge answer) are left out of every denominator and counted in
`n_unparsed`.

Sample sizes are honest: an interval counts distinct generations, not rows. Under greedy decoding (temperature 0)
rows with the same prompt, token budget and injected vector (kind, concept, layer, raw strength; a vector control's
seed and sample; no vector for a no-injection control) are one generation with one verdict, so `distinct` keeps one
of them; at temperature > 0 every row is its own draw. `summarize` reports `n_<rate>` (distinct generations, the n
of the Wilson interval) and `trials_<rate>` (rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
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


_VECTOR_CONTROLS = ("random", "norm_matched", "shuffled", "negative")  # = lab.protocol.trials.VECTOR_CONTROLS


def distinct(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that are distinct generations (first of each greedy duplicate group; every sampled row).

    Without the `prompt` and `temperature` columns nothing can be told apart, and every row counts.
    """
    need = ("prompt", "temperature", "kind", "max_new_tokens")
    if df.empty or any(c not in df.columns for c in need):
        return df
    greedy = (df["temperature"].fillna(0).astype(float) <= 0).to_numpy()
    if not greedy.any():
        return df
    g = df[greedy].reset_index(drop=True)
    raw = g["strength_raw"].fillna(0).astype(float) if "strength_raw" in g else pd.Series(1.0, index=g.index)
    injects = (g["kind"] != "control") & (raw != 0)
    vector_control = g["kind"].isin(_VECTOR_CONTROLS)

    def col(name: str, when: pd.Series | None = None, other: object = "") -> pd.Series:
        values = g[name] if name in g else pd.Series(other, index=g.index)
        return (values if when is None else values.where(when, other)).astype(str)

    key = pd.DataFrame(
        {
            "model": col("model"),
            "prompt": col("prompt"),
            "max_new_tokens": col("max_new_tokens"),
            "kind": col("kind", injects, "none"),
            "concept": col("concept", injects),
            "layer": col("layer", injects),
            "raw": raw.where(injects, 0.0),
            "seed": col("seed", vector_control),
            "sample": col("sample", vector_control),
        }
    )
    keep = np.ones(len(df), dtype=bool)
    keep[np.flatnonzero(greedy)] = ~key.duplicated(keep="first").to_numpy()
    return df[keep]


def _rate(success: pd.Series) -> tuple[int, int, float, float, float]:
    s = success.dropna().astype(bool)
    k, n = int(s.sum()), int(len(s))
    return (k, n, *wilson(k, n))


def _known(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["detected"].notna()]


def summarize(df: pd.DataFrame) -> dict[str, float]:
    """One row of rates with `_lo`/`_hi` bounds, `k_`/`n_` (successes / distinct generations behind the interval)
    and `trials_` (rows) per rate."""
    out: dict[str, float] = {}
    rows, parts = _parts(df), _parts(distinct(df))
    for name, series in parts.items():
        k, n, p, lo, hi = _rate(series)
        out.update(
            {
                name: p,
                f"{name}_lo": lo,
                f"{name}_hi": hi,
                f"k_{name}": k,
                f"n_{name}": n,
                f"trials_{name}": int(rows[name].notna().sum()) if name in rows else n,
            }
        )
    tpr, fpr = out["tpr"], out["fpr"]
    out["balanced_accuracy"] = (tpr + 1 - fpr) / 2 if not (math.isnan(tpr) or math.isnan(fpr)) else float("nan")
    out["n_unparsed"] = int(df["detected"].isna().sum())
    out["n_parse_errors"] = int(df["parse_error"].fillna(False).astype(bool).sum()) if "parse_error" in df else 0
    out["coherence"] = float(df["coherent"].dropna().astype(bool).mean()) if df["coherent"].notna().any() else math.nan
    return out


def _parts(df: pd.DataFrame) -> dict[str, pd.Series]:
    """Per rate, the success flags of the rows it is computed on (unknown verdicts already left out)."""
    inj = _known(df[(df.kind == "injection") & ~df.forced])
    ctl = _known(df[(df.kind == "control") & ~df.forced])
    parts = {
        "tpr": inj["detected"],
        "fpr": ctl["detected"],
        "introspection": inj["detected"].astype(bool) & inj["identified"].fillna(False).astype(bool),
        "forced_id": df[(df.kind == "injection") & df.forced]["identified"],
    }
    for kind in _VECTOR_CONTROLS:
        sub = _known(df[(df.kind == kind) & ~df.forced])
        if len(sub):
            parts[f"{kind}_rate"] = sub["detected"]
    return parts


def rates(df: pd.DataFrame, by: Sequence[str] = ("layer", "strength")) -> pd.DataFrame:
    """`summarize` per group (e.g. per layer × strength, per concept); `by=()` gives one aggregate row."""
    if not by:
        return pd.DataFrame([summarize(df)])
    rows = [
        dict(zip(by, key if isinstance(key, tuple) else (key,))) | summarize(g)
        for key, g in df.groupby(list(by), sort=True)
    ]
    return pd.DataFrame(rows)
