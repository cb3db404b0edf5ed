"""Bidirectional injection: concept pairs matched as in the paper's code, and the share detected both ways.

Matching (the reference `find_matched_pairs_same_category`): within one class (success–success or
failure–failure), every pair whose projections on the pairing direction (the ridge direction) differ by less than
`threshold` is a candidate; candidates are sorted by (⌊|Δprojection| / bucket⌋, |Δdetection rate|) (or by
|Δprojection| when `bucket` is None), then taken greedily while each concept has been used fewer than `max_reuse`
times (1: each concept once), with A/B order randomised (seed 42), up to `max_pairs`.
A pair "works" in a direction when the detection rate of injecting A − B (judged for A) is > τ (the split
threshold); bidirectional = works both ways (the reference code's rule).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence

import pandas as pd

from lab.metrics import wilson


def match_pairs(
    concepts: Sequence[str],
    projections: Mapping[str, float],
    rates: Mapping[str, float],
    threshold: float = math.inf,
    bucket: float | None = None,
    max_reuse: int = 1,
    max_pairs: int = 1000,
    seed: int = 42,
) -> list[tuple[str, str]]:
    cands = []
    for i, a in enumerate(concepts):
        for b in concepts[i + 1 :]:
            diff = abs(projections[a] - projections[b])
            if diff < threshold:
                gap = abs(rates[a] - rates[b])
                cands.append(((int(diff // bucket), gap) if bucket else (diff,), a, b))
    cands.sort(key=lambda x: x[0])  # stable: ties keep the concepts' order
    rng, used, out = random.Random(seed), defaultdict(int), []
    for _, a, b in cands:
        if used[a] < max_reuse and used[b] < max_reuse:
            out.append((a, b) if rng.random() < 0.5 else (b, a))
            used[a] += 1
            used[b] += 1
            if len(out) >= max_pairs:
                break
    return out


def summarize(per_pair: pd.DataFrame, tau: float) -> pd.DataFrame:
    """`per_pair` has columns group (S-S/F-F), a, b, rate_ab, rate_ba; per group: pairs, share working each way,
    either way and both ways (Wilson 95 %)."""
    rows = []
    for group, g in per_pair.groupby("group", sort=True):
        ab, ba = g.rate_ab > tau, g.rate_ba > tau
        row: dict[str, float | str] = {"group": group, "pairs": len(g)}
        for name, s in (("a_minus_b", ab), ("b_minus_a", ba), ("either", ab | ba), ("both", ab & ba)):
            p, lo, hi = wilson(int(s.sum()), len(g))
            row |= {name: p, f"{name}_lo": lo, f"{name}_hi": hi}
        rows.append(row)
    return pd.DataFrame(rows)
