"""Gate features and the evidence carriers that feed them, from stored dose-response tables: direct logit
attribution to "No" − "Yes", gate candidates, inverted-V score and monotonicity; evidence carriers and the
steering-attribution pathway (concept vector → carriers → gates → "No" logit).

Inputs are the dose-response tables (`jobs.dose_response`, written by `lab.experiments.dose_response`):
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

The paper's DLA (`paper_dla_table`, `select_gates_paper`, `--dla paper`; experiments/07_transcoder_feature_analysis.py
:428-472): (unit decoder row) · (mean u_Yes − mean u_No) over yes/Yes/YES and no/No/NO, no final norm, times the
feature's mean |Spearman r| of activation against strength across concepts (not its mean activation); the most
negative are the gate candidates. The code behind the paper's causal numbers (gates ablated: −29.4 % detection,
patched onto unsteered runs: +25.1 %) is not in its public repository; the lab's causal readout is the Yes − No logit
(and P(Yes) > P(No)), not a judged detection rate.

Linear read of a transcoder's input. The transcoder at layer L reads mlp_in.L = γ_L ⊙ x / rms(x) (the block's
pre-MLP RMSNorm of the residual x). Freezing the norm scale at its mean over the unsteered rows (`rms_mid_<L>` in
the rows table), a write w into the residual stream before block L moves feature g's pre-activation by
    w · enc_L[:, g],   enc_L = γ_L[:, None] ⊙ w_enc_L / rms_L
(direct path only: blocks in between are not counted; JumpReLU thresholds are ignored, so this is the
pre-activation change). The virtual weight from feature c (layer l, decoder row w_dec_l[c]) to gate g (layer L > l)
is w_dec_l[c] · enc_L[:, g].

Evidence carriers (the paper's three criteria), among features at layers before the last gate layer:
  1. positive correlation with steering strength: Spearman over s ≥ 0 of the mean activation profile > `rho_min`;
  2. non-zero correlation with per-concept detection: |Pearson r| across concepts between the feature's mean
     activation under positive steering and the concept's detection measure > `r_min` (the measure defaults to
     the mean Yes − No score under positive steering; judged detection rates can be passed instead);
  3. negative attribution to the gates: a_pos × Σ_g virtual weight(c → g) < 0 over gates at later layers.
Generic carriers fire (under positive steering) for at least `generic_frac` of the concepts; the rest are
concept-specific.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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


# the paper's DLA, 07 = experiments/07_transcoder_feature_analysis.py (safety-research/introspection-mechanisms 5d5d9b4)
PAPER_YES, PAPER_NO = ("yes", "Yes", "YES"), ("no", "No", "NO")  # 07:390-391


def concept_correlations(
    features: pd.DataFrame, rows: pd.DataFrame, strengths: Sequence[float] | None = None
) -> pd.DataFrame:
    """Per (layer, feature, concept): Spearman r over the strength grid (sorted) of the concept's mean activation
    (trial numbers averaged, zeros included) — 07's `concept_correlations` (07:755-770, 830-836). Default grid: the
    stored strengths without 0, as 07's `ALL_STRENGTHS = [-8, -4, -2, -1, 1, 2, 4, 8]` (07:70)."""
    n = rows.groupby(["concept", "strength"]).size().rename("n_rows").reset_index()
    g = features.groupby(["layer", "feature", "concept", "strength"])["activation"].sum().rename("total").reset_index()
    strengths = sorted(strengths if strengths is not None else (s for s in rows["strength"].unique() if s != 0))
    wide = g.pivot_table(index=["layer", "feature", "concept"], columns="strength", values="total", fill_value=0.0)
    wide = wide.reindex(columns=strengths, fill_value=0.0)
    counts = n.pivot_table(index="concept", columns="strength", values="n_rows").reindex(columns=strengths)
    means = wide.to_numpy(float) / counts.loc[wide.index.get_level_values("concept")].to_numpy(float)
    out = wide.index.to_frame(index=False)
    out["r"] = spearman_rows(range(len(strengths)), means)
    return out


def paper_dla_table(run: dict[str, Any]) -> pd.DataFrame:
    """07:428-472 as the paper computes it: DLA(f) = (unit decoder row of f) · (mean u_Yes − mean u_No), the mean over
    the single-token spellings yes/Yes/YES and no/No/NO of the unembedding rows (no final norm), × the mean |r| of
    f's per-concept strength correlations (finite, non-zero r only, 07:470-471). Negative = promotes "No"; the
    paper's gate candidates are the most negative (07:412-415). Per (layer, feature) seen in the stored table."""
    from lab.steer.readouts import NO_VARIANTS, YES_VARIANTS

    rd, meta = run["readout"], run["meta"]
    u = rd["unembed_yes_no"].float()
    yes = [meta["yes_rows"][YES_VARIANTS.index(t)] for t in PAPER_YES]
    no = [meta["no_rows"][NO_VARIANTS.index(t)] for t in PAPER_NO]
    delta = u[yes].mean(0) - u[no].mean(0)
    r = concept_correlations(run["features"], run["rows"])
    r = r[np.isfinite(r["r"]) & (r["r"] != 0)]
    mean_abs = r.assign(r=r["r"].abs()).groupby(["layer", "feature"])["r"].mean().rename("mean_abs_r").reset_index()
    allf = run["features"][["layer", "feature"]].drop_duplicates()
    t = allf.merge(mean_abs, on=["layer", "feature"], how="left").fillna({"mean_abs_r": 0.0})
    scores = {lay: dla_unit(tc.w_dec, delta, 1.0, unit=True) for lay, tc in run["transcoders"].items()}
    t["unembed_score"] = [float(scores[int(lay)][int(f)]) for lay, f in zip(t["layer"], t["feature"])]
    t["dla_paper"] = t["unembed_score"] * t["mean_abs_r"]
    return t.sort_values(["layer", "feature"]).reset_index(drop=True)


def select_gates_paper(run: dict[str, Any], k: int = 20, layers: Sequence[int] | None = None) -> pd.DataFrame:
    """The k features with the most negative `paper_dla_table` DLA (to Yes − No), joined with the lab's attribution
    columns (dla_unit, a0, dla) and inverted-V scores so the rest of the report reads them as it reads
    `select_gates`' output; ranked 1..k."""
    t = paper_dla_table(run)
    if layers is not None:
        t = t[t["layer"].isin(list(layers))]
    t = t[t["dla_paper"] < 0].sort_values("dla_paper").head(k)
    lab = attribution_table(run["features"], run["rows"], dla_units_for(run))
    t = t.merge(lab, on=["layer", "feature"], how="left")
    v = inverted_v(profile(run["features"], run["rows"]))
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

    from lab.steer.transcoder import load_transcoder

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


def effective_encoders(
    transcoders: Mapping[int, object], norm_weights: Mapping[int, torch.Tensor], rms: Mapping[int, float]
) -> dict[int, torch.Tensor]:
    """enc_L = γ_L ⊙ w_enc_L / rms_L per layer ([d, n])."""
    return {
        lay: norm_weights[lay].float()[:, None] * tc.w_enc.float() / float(rms[lay])  # type: ignore[attr-defined]
        for lay, tc in transcoders.items()
    }


def mid_rms(rows: pd.DataFrame, layers: Sequence[int]) -> dict[int, float]:
    base = rows[rows["strength"] == 0]
    return {lay: float(base[f"rms_mid_{lay}"].mean()) for lay in layers}


def detection_measure(rows: pd.DataFrame) -> pd.Series:
    """Per concept: mean Yes − No score over the positively steered rows."""
    return rows[rows["strength"] > 0].groupby("concept")["yes_no"].mean()


def judged_detection(trials: pd.DataFrame, layer: int) -> pd.Series:
    """Per concept: the judged detection rate (TPR) of a concept-injection sweep's injected trials at `layer`
    (all strengths pooled) — the paper's per-concept detection, to use instead of the logit measure."""
    t = trials[(trials["kind"] == "injection") & (trials["layer"] == layer) & ~trials["forced"].astype(bool)]
    return t.groupby("concept")["detected"].mean().astype(float)


def gate_attribution(
    transcoders: Mapping[int, object],
    enc: Mapping[int, torch.Tensor],
    gates: pd.DataFrame,
    layer: int,
    features: Sequence[int],
) -> np.ndarray:
    """Σ over gates at layers > `layer` of the virtual weights from each of `features` (at `layer`) to them [k]."""
    w = transcoders[layer].w_dec.float()[list(features)]  # type: ignore[attr-defined]
    total = torch.zeros(len(features))
    for lay, g in gates.groupby("layer"):
        if int(lay) > layer:
            total += (w @ enc[int(lay)][:, g["feature"].astype(int).tolist()]).sum(1)
    return total.numpy()


def select_carriers(
    features: pd.DataFrame,
    rows: pd.DataFrame,
    gates: pd.DataFrame,
    transcoders: Mapping[int, object],
    enc: Mapping[int, torch.Tensor],
    detection: pd.Series | None = None,
    rho_min: float = 0.5,
    r_min: float = 0.3,
    generic_frac: float = 0.5,
) -> pd.DataFrame:
    """Every candidate feature with its three criteria, `carrier` (all three) and `generic` (see the module doc)."""
    if gates.empty:
        return pd.DataFrame()
    last = int(gates["layer"].max())
    f = features[features["layer"] < last]
    if f.empty:
        return pd.DataFrame()
    v = inverted_v(profile(f, rows))
    pos = profile(f[f["strength"] > 0], rows[rows["strength"] > 0], by=("concept",))
    det = detection if detection is not None else detection_measure(rows)
    concepts = sorted(rows["concept"].unique())
    wide = pos.pivot_table(index=["layer", "feature"], columns="concept", values="mean_act", fill_value=0.0)
    wide = wide.reindex(columns=concepts, fill_value=0.0)
    x = wide.to_numpy(dtype=float)
    y = det.reindex(concepts).to_numpy(dtype=float)
    xc, yc = x - x.mean(1, keepdims=True), y - np.nanmean(y)
    den = np.sqrt((xc**2).sum(1) * (yc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (xc @ yc) / den, np.nan)
    t = pd.DataFrame({"r_detection": r, "n_concepts_active": (x > 0).sum(1)}, index=wide.index).reset_index()
    t = v[["layer", "feature", "a0", "a_pos", "a_neg", "rho_pos", "rho_all"]].merge(
        t, on=["layer", "feature"], how="left"
    )
    t = t.fillna({"n_concepts_active": 0})
    t["gate_attr_unit"] = np.nan
    for lay, g in t.groupby("layer"):
        t.loc[g.index, "gate_attr_unit"] = gate_attribution(transcoders, enc, gates, int(lay), g["feature"].tolist())
    t["gate_attr"] = t["gate_attr_unit"] * t["a_pos"]
    t["c_strength"] = t["rho_pos"] > rho_min
    t["c_detection"] = t["r_detection"].abs() > r_min
    t["c_gates"] = t["gate_attr"] < 0
    t["carrier"] = t["c_strength"] & t["c_detection"] & t["c_gates"]
    t["generic"] = t["n_concepts_active"] >= generic_frac * len(concepts)
    return t.reset_index(drop=True)


def carrier_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer: features tested, passing each criterion, carriers, generic vs concept-specific carriers."""
    if table.empty:
        return pd.DataFrame(
            columns=["layer", "tested", "c_strength", "c_detection", "c_gates", "carriers", "generic", "specific"]
        )
    g = table.groupby("layer")
    out = pd.DataFrame(
        {
            "tested": g.size(),
            "c_strength": g["c_strength"].sum(),
            "c_detection": g["c_detection"].sum(),
            "c_gates": g["c_gates"].sum(),
            "carriers": g["carrier"].sum(),
            "generic": g.apply(lambda d: int((d["carrier"] & d["generic"]).sum()), include_groups=False),
        }
    )
    out["specific"] = out["carriers"] - out["generic"]
    return out.reset_index().astype({c: int for c in out.columns})


def pathway(
    vectors: Mapping[str, torch.Tensor],
    inject_layer: int,
    rows: pd.DataFrame,
    carriers: pd.DataFrame,
    gates: pd.DataFrame,
    transcoders: Mapping[int, object],
    enc: Mapping[int, torch.Tensor],
) -> pd.DataFrame:
    """Attribution table of the pathway by layer: columns stage, layer_from, layer_to, attribution, n_from, n_to.
    vector→carriers: mean over positively steered rows of strength_raw × v_concept · enc_l summed over carriers;
    carriers→gates: Σ a_pos(c) × virtual weight(c → g); gates→No: Σ dla_unit × (a_pos − a0), the change of the
    No − Yes logit that steering causes through the gates (and `gates→No (unsteered)`: Σ dla at a0)."""
    out: list[dict[str, object]] = []
    car = carriers[carriers["carrier"]] if not carriers.empty else carriers
    steered = rows[rows["strength"] > 0]
    for lay, c in car.groupby("layer") if not car.empty else []:
        idx = c["feature"].astype(int).tolist()
        per_row = [
            float(s) * float((vectors[k].float() @ enc[int(lay)][:, idx]).sum())
            for k, s in zip(steered["concept"], steered["strength_raw"])
        ]
        out.append(
            {
                "stage": "vector→carriers",
                "layer_from": inject_layer,
                "layer_to": int(lay),
                "attribution": float(np.mean(per_row)) if per_row else 0.0,
                "n_from": 1,
                "n_to": len(idx),
            }
        )
        a_pos = torch.tensor(c["a_pos"].to_numpy(dtype=float), dtype=torch.float32)
        w = transcoders[int(lay)].w_dec.float()[idx] * a_pos[:, None]  # type: ignore[attr-defined]
        for glay, g in gates.groupby("layer"):
            if int(glay) > int(lay):
                a = float((w @ enc[int(glay)][:, g["feature"].astype(int).tolist()]).sum())
                out.append(
                    {
                        "stage": "carriers→gates",
                        "layer_from": int(lay),
                        "layer_to": int(glay),
                        "attribution": a,
                        "n_from": len(idx),
                        "n_to": len(g),
                    }
                )
    for glay, g in gates.groupby("layer"):
        out.append(
            {
                "stage": "gates→No",
                "layer_from": int(glay),
                "layer_to": -1,
                "n_from": len(g),
                "n_to": 1,
                "attribution": float((g["dla_unit"] * (g["a_pos"] - g["a0"])).sum()),
            }
        )
        out.append(
            {
                "stage": "gates→No (unsteered)",
                "layer_from": int(glay),
                "layer_to": -1,
                "n_from": len(g),
                "n_to": 1,
                "attribution": float(g["dla"].sum()),
            }
        )
    return pd.DataFrame(out, columns=["stage", "layer_from", "layer_to", "attribution", "n_from", "n_to"])


def main(run_dir: str | Path, k: int = 20, out: str | Path | None = None, dla: str = "lab") -> Path:
    """Redo the gate selection from a stored dose-response run (`dla`: lab = through the final norm, to No − Yes;
    paper = `paper_dla_table`); prints the top gates and their summary and returns the CSV written (default
    <run>/report/gates-rerun.csv)."""
    import time

    t0 = time.time()
    run = load_run(run_dir)
    if dla == "paper":
        gates = select_gates_paper(run, k)
    else:
        gates = select_gates(run["features"], run["rows"], dla_units_for(run), k)
    path = Path(out or Path(run_dir) / "report" / "gates-rerun.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    gates.to_csv(path, index=False)
    print(gates.head(10).to_string(index=False))
    print(json.dumps(gate_summary(gates)), f"[{time.time() - t0:.1f} s] -> {path}")
    return path


if __name__ == "__main__":
    from lab.errors import ArgumentParser, LabError, input_folder, one_line_errors
    from lab.run.preflight import writable

    with one_line_errors():
        p = ArgumentParser(prog="python -m analysis.gates", description="Redo the gate selection from a stored run")
        p.add_argument("--run", required=True, help="dose-response output directory")
        p.add_argument("--k", type=int, default=20, help="gate candidates (>= 1)")
        p.add_argument("--out", help="write gates.csv here (default: <run>/report/gates-rerun.csv)")
        p.add_argument(
            "--dla", choices=["lab", "paper"], default="lab", help="paper: 07's DLA (most negative to Yes−No)"
        )
        a = p.parse_args()
        run = input_folder(a.run, "meta.json", "features", "rows", "readout.safetensors", made_by="jobs.dose_response")
        if a.k < 1:
            raise LabError(f"--k must be >= 1, got {a.k}")
        writable(Path(a.out).parent if a.out else run / "report", "--out" if a.out else "report folder")
        main(run, a.k, a.out, a.dla)
