"""Evidence carriers and the steering-attribution pathway: concept vector → carriers → gates → "No" logit.

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

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from analysis.gates import inverted_v, profile


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
