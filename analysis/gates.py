"""Gate features: direct logit attribution to "No" − "Yes", gate candidates, inverted-V score and monotonicity.

Inputs are the dose-response tables (`jobs.dose_response`, written by `lab.experiments.features`):
  features  long and sparse: concept, strength, trial_number, layer, feature, activation (only non-zero activations)
  rows      one per forward pass: concept, strength, trial_number, yes_no, rms_final, rms_mid_<layer>, …
and, per transcoder layer, the transcoder's decoder rows; plus `readout` tensors saved from the model (final-norm
weight, unembedding rows of the Yes/No variants), so everything here reruns from stored files without a model.

Direct logit attribution (DLA). A feature f of the transcoder at layer L writes a_f · w_dec[f] into the residual
stream (mlp_out.L). Its *direct* effect on the final logits goes through the final RMSNorm and the unembedding:
    Δ(logit_No − logit_Yes) ≈ a_f · (γ ⊙ w_dec[f]) · (u_No − u_Yes) / rms(h_final)
where γ is the final norm's weight and rms(h_final) its input's RMS. Freezing the norm's scale (the linear part of
RMSNorm, γ/rms) makes this exact; letting rms move with the edit makes it a first-order approximation. Paths through
later blocks are not counted (that is what "direct" means). With several spellings per label, u_Yes/u_No are the
mean unembedding rows of the variants (a linearisation of the logsumexp readout with equal weights).
`dla_unit` is the attribution per unit activation (decoder row as stored; `unit=True` normalises the row first, the
paper's "unit decoder row" reading — equal when decoder rows have unit norm), and `dla = dla_unit × mean activation`
over the unsteered rows. Positive DLA promotes "No": the most positive are the gate candidates.

Inverted V (per feature, from the strength profile a(s) = mean activation over concepts and trial numbers):
  inv_v = a(0) − ½ (mean_{s>0} a(s) + mean_{s<0} a(s)),  inv_v_rel = inv_v / a(0)
  rho_pos = Spearman(s, a(s)) over s ≥ 0 (a gate: < 0), rho_neg over s ≤ 0 (a gate: > 0), rho_all over all s.
Run `python -m analysis.gates --run <dose-response output dir>` to redo the selection from stored tables.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch


def readout_direction(
    unembed: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int], final_norm_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """γ ⊙ (mean u_No − mean u_Yes) [d]: dotted with a residual-stream write and divided by rms(h_final) it gives
    the direct change of logit(No) − logit(Yes)."""
    u = unembed.float()
    g = u[list(no_ids)].mean(0) - u[list(yes_ids)].mean(0)
    return g if final_norm_weight is None else g * final_norm_weight.float()


def dla_unit(w_dec: torch.Tensor, direction: torch.Tensor, rms_final: float = 1.0, unit: bool = False) -> torch.Tensor:
    """Direct attribution to No − Yes per unit activation of each feature [n] (see the module doc)."""
    w = w_dec.float()
    if unit:
        w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (w @ direction.float()) / rms_final


def n_rows(rows: pd.DataFrame, by: Sequence[str] = ("strength",)) -> pd.Series:
    return rows.groupby(list(by)).size().rename("n_rows")


def profile(features: pd.DataFrame, rows: pd.DataFrame, by: Sequence[str] = ("strength",)) -> pd.DataFrame:
    """Mean activation per (layer, feature, *by) over all rows of that group, zeros included (the table is sparse),
    plus `frac_active` (share of those rows where the feature fired)."""
    keys = ["layer", "feature", *by]
    g = features.groupby(keys)["activation"].agg(total="sum", hits="count").reset_index()
    g = g.merge(n_rows(rows, by).reset_index(), on=list(by))
    g["mean_act"] = g["total"] / g["n_rows"]
    g["frac_active"] = g["hits"] / g["n_rows"]
    return g.drop(columns=["total", "hits"])


def strength_matrix(prof: pd.DataFrame, strengths: Sequence[float]) -> tuple[pd.MultiIndex, np.ndarray]:
    """(layer, feature) index and the [features × strengths] mean-activation matrix (0 where never active)."""
    wide = prof.pivot_table(index=["layer", "feature"], columns="strength", values="mean_act", fill_value=0.0)
    wide = wide.reindex(columns=list(strengths), fill_value=0.0)
    return wide.index, wide.to_numpy(dtype=float)


def spearman_rows(x: Sequence[float], m: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of m with x (NaN for constant rows)."""
    from scipy.stats import rankdata

    if m.size == 0:
        return np.full(len(m), np.nan)
    rx = rankdata(np.asarray(x, dtype=float))
    rm = rankdata(m, axis=1)
    rx = rx - rx.mean()
    rm = rm - rm.mean(axis=1, keepdims=True)
    den = np.sqrt((rm**2).sum(1) * (rx**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rm @ rx) / den, np.nan)


def inverted_v(prof: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, feature): a0, a_pos, a_neg, inv_v, inv_v_rel, rho_pos, rho_neg, rho_all (see the module doc)."""
    s = sorted(prof["strength"].unique())
    idx, m = strength_matrix(prof, s)
    sa = np.asarray(s)
    out = pd.DataFrame(index=idx).reset_index()
    zero = np.flatnonzero(sa == 0)
    a0 = m[:, zero[0]] if len(zero) else np.full(len(m), np.nan)
    pos, neg = sa > 0, sa < 0
    a_pos = m[:, pos].mean(1) if pos.any() else np.full(len(m), np.nan)
    a_neg = m[:, neg].mean(1) if neg.any() else np.full(len(m), np.nan)
    out["a0"], out["a_pos"], out["a_neg"] = a0, a_pos, a_neg
    out["inv_v"] = a0 - 0.5 * (a_pos + a_neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["inv_v_rel"] = np.where(a0 > 0, out["inv_v"] / np.where(a0 > 0, a0, 1), np.nan)
    out["rho_pos"] = spearman_rows(sa[sa >= 0], m[:, sa >= 0]) if (sa >= 0).sum() > 1 else np.nan
    out["rho_neg"] = spearman_rows(sa[sa <= 0], m[:, sa <= 0]) if (sa <= 0).sum() > 1 else np.nan
    out["rho_all"] = spearman_rows(sa, m)
    return out


def attribution_table(features: pd.DataFrame, rows: pd.DataFrame, dla_units: dict[int, torch.Tensor]) -> pd.DataFrame:
    """Per (layer, feature) seen in the table: dla_unit, unsteered mean activation a0 and dla = dla_unit × a0."""
    prof = profile(features, rows)
    base = prof[prof["strength"] == 0][["layer", "feature", "mean_act"]].rename(columns={"mean_act": "a0"})
    allf = features[["layer", "feature"]].drop_duplicates()
    t = allf.merge(base, on=["layer", "feature"], how="left").fillna({"a0": 0.0})
    t["dla_unit"] = [float(dla_units[int(lay)][int(f)]) for lay, f in zip(t["layer"], t["feature"])]
    t["dla"] = t["dla_unit"] * t["a0"]
    return t.sort_values(["layer", "feature"]).reset_index(drop=True)


def select_gates(
    features: pd.DataFrame,
    rows: pd.DataFrame,
    dla_units: dict[int, torch.Tensor],
    k: int = 20,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The k features with the most positive DLA to No − Yes (active unsteered, so DLA > 0), joined with their
    inverted-V scores; ranked 1..k. `layers` restricts where gates may sit (default: every transcoder layer)."""
    t = attribution_table(features, rows, dla_units)
    if layers is not None:
        t = t[t["layer"].isin(list(layers))]
    t = t[t["dla"] > 0].sort_values("dla", ascending=False).head(k)
    v = inverted_v(profile(features, rows))
    t = t.merge(v.drop(columns=["a0"]), on=["layer", "feature"], how="left")
    return t.assign(rank=np.arange(1, len(t) + 1)).reset_index(drop=True)


def gate_summary(gates: pd.DataFrame) -> dict[str, float]:
    """Headline figures: how many candidates, how many look like an inverted V (suppressed by both signs)."""
    if gates.empty:
        return {"n_gates": 0, "n_inverted_v": 0, "share_inverted_v": float("nan"), "mean_inv_v_rel": float("nan")}
    inv = (gates["inv_v"] > 0) & (gates["rho_pos"] < 0) & (gates["rho_neg"] > 0)
    return {
        "n_gates": len(gates),
        "n_inverted_v": int(inv.sum()),
        "share_inverted_v": float(inv.mean()),
        "mean_inv_v_rel": float(gates["inv_v_rel"].mean()),
        "total_dla": float(gates["dla"].sum()),
    }


# ---------------------------------------------------------------------------------------------------------------
# stored results (no model needed)


def load_run(run: str | Path) -> dict[str, Any]:
    """The dose-response tables, transcoders and readout tensors of an output directory."""
    from safetensors.torch import load_file

    from analysis.transcoders import load as load_transcoder

    root = Path(run)
    features = pd.read_parquet(root / "features")
    rows = pd.read_parquet(root / "rows")
    meta = json.loads((root / "meta.json").read_text())
    readout = load_file(str(root / "readout.safetensors"))
    tcs = {int(lay): load_transcoder(root / "transcoders" / f"layer{lay}.safetensors") for lay in meta["layers"]}
    return {"features": features, "rows": rows, "meta": meta, "readout": readout, "transcoders": tcs}


def dla_units_for(run: dict[str, Any], unit: bool = False) -> dict[int, torch.Tensor]:
    rd = run["readout"]
    direction = readout_direction(
        rd["unembed_yes_no"], run["meta"]["yes_rows"], run["meta"]["no_rows"], rd["final_norm_weight"]
    )
    rms = float(run["rows"].loc[run["rows"]["strength"] == 0, "rms_final"].mean())
    return {lay: dla_unit(tc.w_dec, direction, rms, unit) for lay, tc in run["transcoders"].items()}


def main(argv: list[str] | None = None) -> int:
    import time

    p = argparse.ArgumentParser(description="Redo the gate selection from a stored dose-response run")
    p.add_argument("--run", required=True, help="dose-response output directory")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--out", help="write gates.csv here (default: <run>/report/gates-rerun.csv)")
    a = p.parse_args(argv)
    t0 = time.time()
    run = load_run(a.run)
    gates = select_gates(run["features"], run["rows"], dla_units_for(run), a.k)
    out = Path(a.out or Path(a.run) / "report" / "gates-rerun.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    gates.to_csv(out, index=False)
    print(gates.head(10).to_string(index=False))
    print(json.dumps(gate_summary(gates)), f"[{time.time() - t0:.1f} s] -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
