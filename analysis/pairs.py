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

import json
import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lab.reporting.metrics import wilson


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


def summarize_pairs(per_pair: pd.DataFrame, tau: float) -> pd.DataFrame:
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


@dataclass(frozen=True)
class PairPlan:
    """What a geometry job's stored outputs give the bidirectional experiment."""

    layer: int
    strength: float  # the sweep's, in its mode
    mode: str
    resid: float
    tau: float
    model: str
    vectors: dict[str, torch.Tensor]
    rate: dict[str, float]
    proj: dict[str, float]
    pairs: list[tuple[str, str, str]]  # (group, A, B)
    groups: dict[str, list[str]]


def plan_pairs(
    adir: Path, threshold: float | None, bucket: float | None, max_pairs: int, units: str = "std"
) -> PairPlan:
    """Pairs within success–success and failure–failure from a geometry job's analysis/ folder (no model).
    `threshold` / `bucket` are in units of the projections' std (`units="std"`, the lab) or raw projection units
    (`"raw"`: the paper's `DEFAULT_BIDIRECTIONAL_THRESHOLD = 200`, 04c:66, on the unit ridge direction, 04c:471-477)."""
    from safetensors.torch import load_file

    from analysis import geometry as geo

    info = json.loads((adir / geo.RESULT).read_text())
    extra, tau = info["extra"], float(info["tau"])
    vecs = load_file(str(adir / geo.VECTORS))
    rates = pd.read_csv(adir / geo.RATES_FILE)
    rates = rates[rates.concept.isin(vecs)]
    concepts, y = list(rates.concept), rates["rate"].to_numpy(float)
    X = torch.stack([vecs[c] for c in concepts]).double().numpy()
    proj = dict(zip(concepts, (X @ geo.ridge_direction(X, y)).tolist()))
    rate = dict(zip(concepts, y.tolist()))
    sd = (float(np.std(list(proj.values()))) or 1.0) if units == "std" else 1.0
    thr = math.inf if threshold is None else threshold * sd
    groups = {"S-S": [c for c in concepts if rate[c] > tau], "F-F": [c for c in concepts if rate[c] <= tau]}
    pairs = [
        (g, a, b)
        for g, cs in groups.items()
        for a, b in match_pairs(cs, proj, rate, thr, bucket * sd if bucket else None, max_pairs=max_pairs)
    ]
    layer, mode, resid = int(extra["layer"]), extra["strength_mode"], float(extra["resid_norm"])
    return PairPlan(
        layer, float(extra["strength"]), mode, resid, tau, extra.get("model", ""), vecs, rate, proj, pairs, groups
    )


def per_pair_table(plan: PairPlan, detected: Mapping[str, float]) -> pd.DataFrame:
    """One row per pair: rates of A and B alone, |Δprojection| and the detection rate of A − B and of B − A."""
    rows = []
    for g, a, b in plan.pairs:
        rows.append(
            {"group": g, "a": a, "b": b, "rate_a": plan.rate[a], "rate_b": plan.rate[b]}
            | {"proj_diff": abs(plan.proj[a] - plan.proj[b])}
            | {"rate_ab": float(detected[f"{a}-{b}"]), "rate_ba": float(detected[f"{b}-{a}"])}
            | {"vector_ab": f"{a}-{b}", "vector_ba": f"{b}-{a}"}
        )
    return pd.DataFrame(rows)


def summary_lines(summary: pd.DataFrame) -> list[str]:
    return [
        f"{r['group']}: {int(r['pairs'])} pairs; A−B works {r['a_minus_b']:.3f}, B−A {r['b_minus_a']:.3f}, "
        f"both ways {r['both']:.3f} [{r['both_lo']:.2f},{r['both_hi']:.2f}], either {r['either']:.3f}"
        for _, r in summary.iterrows()
    ]


def plot_pairs(summary: pd.DataFrame, tau: float, path: Path, title: str) -> Path:
    from lab.reporting import plots

    fig, ax = plots.plt.subplots(figsize=(5.5, 3.4))
    xs = np.arange(len(summary))
    for j, m in enumerate(("a_minus_b", "b_minus_a", "both")):
        v = summary[m].to_numpy()
        err = np.vstack([v - summary[f"{m}_lo"].to_numpy(), summary[f"{m}_hi"].to_numpy() - v])
        ax.bar(xs + (j - 1) * 0.27, v, 0.27, yerr=err, capsize=3, label=m.replace("_", " "))
    ax.set_xticks(xs, [f"{g} (n={int(n)})" for g, n in zip(summary.group, summary.pairs)])
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of pairs with rate > τ={tau:.2f}")
    ax.legend(fontsize=8)
    return plots.save(fig, path, title)
