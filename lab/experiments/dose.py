"""Dose calibration: per layer, where answers stay coherent and where detection starts, in both strength units.

Pure pandas over stored, graded trials (`lab.experiments.concept_injection.run_sweep` rows). Coherence is the judge's `coherent` verdict on
injected trials; when the judge does not grade coherence (None), the repetition/garbage detector of the rules judge
(`lab.judges.text.degenerate_reason`) decides. The coherent band of a layer is the strengths whose injected answers
are coherent at least `min_coherence` of the time; detection starts at the weakest strength whose TPR interval lies
above both the no-injection FPR and the random-vector rate (Wilson 95 %). The recommended band is the coherent
strengths from detection onset up; without an onset it is the coherent band, flagged `detects: false`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lab.errors import LabError
from lab.reporting import metrics


@dataclass(frozen=True)
class DoseSettings:
    min_coherence: float = field(default=0.8, metadata={"help": "coherent band: injected answers coherent >= this"})

    def __post_init__(self) -> None:
        if not 0 < self.min_coherence <= 1:
            raise LabError(f"dose.min_coherence must be in (0, 1], got {self.min_coherence}")


def coherent(df: pd.DataFrame) -> pd.Series:
    """Per row: the judge's coherence verdict, or the degenerate-text detector where the judge gave none."""
    from lab.judges.text import degenerate_reason

    fallback = df["response"].fillna("").map(lambda t: degenerate_reason(str(t)) is None)
    if "coherent" not in df:
        return fallback.astype(bool)
    return df["coherent"].where(df["coherent"].notna(), fallback).astype(bool)


def curve(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer × strength: TPR, FPR, random-vector rate (with intervals), coherence of injected answers, and the
    strength in both units (raw multiplier, ‖s·v‖/‖resid‖) averaged over the injected trials."""
    df = df.assign(coherent=coherent(df))
    rows = []
    for (layer, strength), g in df.groupby(["layer", "strength"], sort=True):
        inj = g[(g["kind"] == "injection") & ~g["forced"].astype(bool)]
        k = int(inj["coherent"].sum())
        coh, lo, hi = metrics.wilson(k, len(inj))
        r = metrics.summarize(g)
        rows.append(
            {
                "layer": int(layer),
                "strength": float(strength),
                "strength_raw": float(inj["strength_raw"].mean()) if "strength_raw" in inj else math.nan,
                "strength_rel": float(inj["strength_rel"].mean()) if "strength_rel" in inj else math.nan,
                "coherence": coh,
                "coherence_lo": lo,
                "coherence_hi": hi,
                "n_coherence": len(inj),
            }
            | {
                k2: r.get(k2, math.nan)
                for k2 in (
                    "tpr",
                    "tpr_lo",
                    "tpr_hi",
                    "n_tpr",
                    "fpr",
                    "fpr_lo",
                    "fpr_hi",
                    "random_rate",
                    "random_rate_lo",
                    "random_rate_hi",
                )
            }
        )
    return pd.DataFrame(rows)


def bands(table: pd.DataFrame, settings: DoseSettings) -> pd.DataFrame:
    """Per layer: the coherent band, detection onset and the recommended band (strengths in the sweep's units and
    relative units)."""
    out = []
    for layer, g in table.groupby("layer", sort=True):
        g = g.sort_values("strength")
        ok = g[g["coherence"] >= settings.min_coherence]
        floor = g[["fpr_hi", "random_rate_hi"]].max(axis=1).fillna(g["fpr_hi"])
        detects = g[(g["tpr_lo"] > floor) & (g["coherence"] >= settings.min_coherence)]
        onset = float(detects["strength"].min()) if len(detects) else math.nan
        rec = ok[ok["strength"] >= onset] if len(detects) else ok
        out.append(
            {
                "layer": int(layer),
                "coherent_lo": _first(ok, "strength"),
                "coherent_hi": _last(ok, "strength"),
                "coherent_rel_hi": _last(ok, "strength_rel"),
                "detection_onset": onset,
                "detects": bool(len(detects)),
                "recommended": [float(s) for s in rec["strength"]],
                "recommended_rel": [round(float(s), 4) for s in rec["strength_rel"]],
                "recommended_raw": [round(float(s), 4) for s in rec["strength_raw"]],
            }
        )
    return pd.DataFrame(out)


def _onset(r: pd.Series) -> str:
    return f"{r['detection_onset']:g}" if r["detects"] else "none (no TPR interval above the controls)"


def _first(g: pd.DataFrame, col: str) -> float:
    return float(g[col].iloc[0]) if len(g) else math.nan


def _last(g: pd.DataFrame, col: str) -> float:
    return float(g[col].iloc[-1]) if len(g) else math.nan


def snippet(b: pd.DataFrame, mode: str, settings: DoseSettings) -> str:
    """A config snippet (YAML) with the recommended layers and strengths, per-layer bands as comments."""
    lines = [
        f"# dose calibration: coherent = injected answers coherent >= {settings.min_coherence:g}; "
        "detection = TPR interval above FPR and random-vector rate"
    ]
    for _, r in b.iterrows():
        lines.append(
            f"#   layer {r['layer']}: coherent {r['coherent_lo']:g}..{r['coherent_hi']:g} ({mode}); "
            f"detection onset {_onset(r)}; recommended {r['recommended']} "
            f"(relative {r['recommended_rel']}, raw {r['recommended_raw']})"
        )
    use = b[b["recommended"].map(len) > 0]
    strengths = sorted({s for rec in use["recommended"] for s in rec})
    lines += [
        "sweep:",
        f"  layers: [{', '.join(str(int(x)) for x in use['layer'])}]",
        f"  strengths: [{', '.join(f'{s:g}' for s in strengths)}]",
        f"  strength_mode: {mode}",
        "",
    ]
    return "\n".join(lines)


def plot_calibration(table: pd.DataFrame, b: pd.DataFrame, path: str | Path, title: str = "", mode: str = "") -> Path:
    """Per layer: TPR (with interval), random-vector rate and coherence against strength; the coherent band shaded,
    detection onset dashed."""
    from lab.reporting import plots

    layers = sorted(table["layer"].unique())
    fig, axes = plots.plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers):
        g = table[table["layer"] == layer].sort_values("strength")
        band = b[b["layer"] == layer].iloc[0]
        if band["coherent_lo"] == band["coherent_lo"]:
            ax.axvspan(band["coherent_lo"], band["coherent_hi"], color="tab:green", alpha=0.12, label="coherent band")
        if band["detects"]:
            ax.axvline(band["detection_onset"], color="tab:blue", ls="--", lw=1, label="detection onset")
        x = g["strength"]
        ax.fill_between(x, g["tpr_lo"], g["tpr_hi"], color="tab:blue", alpha=0.15)
        ax.plot(x, g["tpr"], "o-", color="tab:blue", label="TPR")
        if g["random_rate"].notna().any():
            ax.plot(x, g["random_rate"], "s-", color="tab:orange", label="random-vector rate")
        ax.plot(x, g["coherence"], "^-", color="tab:green", label="coherence")
        other, unit = ("strength_raw", "raw ×v") if mode == "relative" else ("strength_rel", "‖s·v‖/‖resid‖")
        ax.set_title(f"layer {layer}\n{unit}: " + ", ".join(f"{v:.3g}" for v in g[other]), fontsize=7)
        ax.set_xlabel(f"strength ({mode})" if mode else "strength")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("rate")
    axes[0][-1].legend(fontsize=7, loc="best")
    return plots.save(fig, path, title)
