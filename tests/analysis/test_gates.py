"""Gates: DLA equals the logit change of the feature's decoder write (exact with the final norm's scale frozen),
the inverted-V and Spearman scores on a hand-made profile, carriers by the three criteria, the rerun from stored
tables, and the interventions the causal tests use (empty set bit-identical, clamp to own value unchanged)."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
import torch

from analysis import gates
from lab.steer import interventions as iv
from lab.steer.transcoder import Transcoder
from tests.entry import run_module

YES, NO = [5, 7], [9, 11]


def _tc(d_in: int, n: int, d_out: int, seed: int) -> Transcoder:
    g = torch.Generator().manual_seed(seed)
    return Transcoder(
        torch.randn(d_in, n, generator=g) * 0.3,
        torch.randn(n, d_out, generator=g) * 0.3,
        torch.zeros(n),
        torch.zeros(d_out),
        threshold=torch.full((n,), 0.05),
    )


def _frozen_norm(model, ids):
    """Run once to read the final norm's input RMS per position; return a hook that keeps that scale fixed."""
    norm = model.model.norm
    seen = {}

    def read(m, a, o):
        seen["rms"] = torch.sqrt(a[0].pow(2).mean(-1, keepdim=True) + m.variance_epsilon)

    h = norm.register_forward_hook(read)
    with torch.no_grad():
        model(ids)
    h.remove()
    return norm.register_forward_hook(lambda m, a, o: m.weight * (a[0] / seen["rms"])), seen["rms"]


def _no_minus_yes(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, NO].mean(-1) - logits[:, -1, YES].mean(-1)


@torch.no_grad()
def test_dla_equals_logit_change_of_the_decoder_write(tiny_model):
    """A feature of a transcoder at the last block, clamped to f + 1 on the last position: the change of
    mean logit(No) − mean logit(Yes) is its dla_unit — exact with the norm scale frozen, first-order without."""
    ids = torch.arange(1, 13).reshape(2, 6)
    tc = _tc(32, 16, 32, 1)
    with iv.capture(tiny_model, ["mlp_in.3"]) as a:
        tiny_model(ids)
    f = tc.encode(a["mlp_in.3"][0])
    hook, rms = _frozen_norm(tiny_model, ids)
    try:
        base = _no_minus_yes(tiny_model(ids).logits)
        direction = gates.readout_direction(tiny_model.lm_head.weight, YES, NO, tiny_model.model.norm.weight)
        for j in (0, 3, 7):
            per_row = torch.stack([gates.dla_unit(tc.w_dec, direction, float(rms[b, -1]))[j] for b in range(2)])
            vals = f[..., [j]].clone()
            vals[:, -1] += 1.0
            with iv.apply(tiny_model, [iv.EditFeatures("mlp_out.3", tc, [j], values=vals)]):
                delta = _no_minus_yes(tiny_model(ids).logits) - base
            torch.testing.assert_close(delta, per_row, rtol=0, atol=1e-5)
    finally:
        hook.remove()
    # the real norm: first order, DLA misses only the norm's projection term −(γ⊙x)·u (x·w) / (d rms³)
    with iv.capture(tiny_model, ["resid_post.3"]) as a:
        base = _no_minus_yes(tiny_model(ids).logits)
    x, w, d = a["resid_post.3"][0][:, -1], tc.w_dec[3], tc.w_dec.shape[1]
    vals = f[..., [3]].clone()
    vals[:, -1] += 1e-4
    with iv.apply(tiny_model, [iv.EditFeatures("mlp_out.3", tc, [3], values=vals)]):
        delta = (_no_minus_yes(tiny_model(ids).logits) - base) / 1e-4
    r = rms[:, -1, 0]
    dla = torch.stack([gates.dla_unit(tc.w_dec, direction, float(r[b]))[3] for b in range(2)])
    gamma = tiny_model.model.norm.weight
    projection = (x * gamma) @ (direction / gamma) * (x @ w) / (d * r**3)
    torch.testing.assert_close(delta, dla - projection, rtol=0.02, atol=2e-3)


def _tables():
    """Two concepts × 3 trial numbers × strengths −2..2; layer 2 feature 4 is an inverted V (3 unsteered, 1 at
    |s| = 1, 0 at |s| = 2); layer 1 feature 0 grows with s > 0; layer 2 feature 6 is flat and always on."""
    strengths = [-2.0, -1.0, 0.0, 1.0, 2.0]
    rows, feats = [], []
    for c, gain in (("Dust", 1.0), ("Bread", 2.0)):
        for s in strengths:
            for n in (1, 2, 3):
                key = {"concept": c, "strength": s, "trial_number": n}
                rows.append(
                    {
                        **key,
                        "strength_raw": s * 10,
                        "yes_no": gain * max(s, 0) - 1,
                        "rms_final": 2.0,
                        "rms_mid_1": 1.0,
                        "rms_mid_2": 1.0,
                    }
                )
                feats.append({**key, "layer": 2, "feature": 6, "activation": 1.0})
                if abs(s) < 2:
                    feats.append({**key, "layer": 2, "feature": 4, "activation": 3.0 - 2.0 * abs(s)})
                if s > 0:
                    feats.append({**key, "layer": 1, "feature": 0, "activation": gain * s})
    return pd.DataFrame(feats), pd.DataFrame(rows)


def test_inverted_v_and_gate_selection_on_a_known_profile():
    feats, rows = _tables()
    v = gates.inverted_v(gates.profile(feats, rows)).set_index(["layer", "feature"])
    r = v.loc[(2, 4)]
    assert (r["a0"], r["a_pos"], r["a_neg"], r["inv_v"], r["inv_v_rel"]) == (3.0, 0.5, 0.5, 2.5, 2.5 / 3)
    assert (r["rho_pos"], r["rho_neg"]) == (-1.0, 1.0)
    assert v.loc[(1, 0), "rho_pos"] == 1.0
    assert v.loc[(1, 0), "rho_all"] == pytest.approx(0.8944272)  # = scipy.stats.spearmanr (ties at s ≤ 0)
    assert pd.isna(v.loc[(2, 6), "rho_all"])  # flat
    units = {1: torch.zeros(8), 2: torch.tensor([0, 0, 0, 0, 0.5, 0, -0.1, 0])}
    g = gates.select_gates(feats, rows, units, k=5)
    assert g[["layer", "feature", "dla"]].values.tolist() == [[2, 4, 1.5]]  # feature 6 promotes Yes: not a gate
    assert gates.gate_summary(g) == {
        "n_gates": 1,
        "n_inverted_v": 1,
        "share_inverted_v": 1.0,
        "mean_inv_v_rel": pytest.approx(2.5 / 3),
        "total_dla": 1.5,
    }


def _carrier_setup():
    feats, rows = _tables()
    d = 4
    # layer-2 gate 4 reads e0; layer-1 feature 0 writes −e0 (suppresses the gate), others write nothing
    enc2 = torch.zeros(d, 8)
    enc2[0, 4] = 1.0
    dec1 = torch.zeros(8, d)
    dec1[0, 0] = -1.0
    tcs = {
        1: Transcoder(torch.zeros(d, 8), dec1, torch.zeros(8), torch.zeros(d)),
        2: Transcoder(enc2, torch.zeros(8, d), torch.zeros(8), torch.zeros(d)),
    }
    units = {1: torch.zeros(8), 2: torch.tensor([0, 0, 0, 0, 0.5, 0, -0.1, 0])}
    g = gates.select_gates(feats, rows, units, k=5)
    enc = gates.effective_encoders(tcs, {1: torch.ones(d), 2: torch.full((d,), 2.0)}, gates.mid_rms(rows, [1, 2]))
    return feats, rows, g, tcs, enc


def test_carriers_by_the_three_criteria_and_the_pathway():
    feats, rows, g, tcs, enc = _carrier_setup()
    t = gates.select_carriers(feats, rows, g, tcs, enc)
    r = t.set_index(["layer", "feature"]).loc[(1, 0)]
    assert bool(r["carrier"]) and bool(r["generic"]) and r["r_detection"] == pytest.approx(1.0)
    assert r["gate_attr_unit"] == -2.0 and r["gate_attr"] == -2.0 * 2.25  # a_pos = mean(1,2,2,4)
    counts = gates.carrier_counts(t)
    assert counts.to_dict("records") == [
        {
            "layer": 1,
            "tested": 1,
            "c_strength": 1,
            "c_detection": 1,
            "c_gates": 1,
            "carriers": 1,
            "generic": 1,
            "specific": 0,
        }
    ]
    vec = {"Dust": torch.tensor([1.0, 0, 0, 0]), "Bread": torch.tensor([0.0, 1, 0, 0])}
    enc[1] = torch.zeros(4, 8)
    enc[1][0, 0] = 0.5
    p = gates.pathway(vec, 0, rows, t, g, tcs, enc).set_index("stage")["attribution"]
    # Dust rows: strength_raw 10, 20 → 0.5·10, 0.5·20; Bread reads nothing: mean over 12 rows = (3·5 + 3·10)/12
    assert p["vector→carriers"] == 3.75 and p["carriers→gates"] == -4.5
    assert p["gates→No"] == 0.5 * (0.5 - 3.0) and p["gates→No (unsteered)"] == 1.5


def _store_tables(run):
    """`_tables()` stored as a gates run keeps them (features/, rows/), with an empty transcoders/ folder."""
    feats, rows = _tables()
    for sub, table in (("features", feats), ("rows", rows)):
        (run / sub).mkdir()
        table.to_parquet(run / sub / "c0.parquet")
    (run / "transcoders").mkdir()


def test_gate_selection_reruns_from_stored_tables(tmp_path):
    from safetensors.torch import save_file

    _store_tables(tmp_path)
    dec2 = torch.zeros(8, 3)
    dec2[4] = torch.tensor([1.0, 0, 0])
    dec2[6] = torch.tensor([0, 1.0, 0])
    _tc(3, 8, 3, 0).save(tmp_path / "transcoders" / "layer1.safetensors")
    layer2 = Transcoder(torch.zeros(3, 8), dec2, torch.zeros(8), torch.zeros(3))
    layer2.save(tmp_path / "transcoders" / "layer2.safetensors")
    # u_No − u_Yes = (1, −0.2, 0) with γ = 1: feature 4 → +1/rms, feature 6 → −0.2/rms
    save_file(
        {"final_norm_weight": torch.ones(3), "unembed_yes_no": torch.tensor([[0.0, 0.2, 0], [1.0, 0, 0]])},
        str(tmp_path / "readout.safetensors"),
    )
    (tmp_path / "meta.json").write_text(json.dumps({"layers": [1, 2], "yes_rows": [0], "no_rows": [1]}))
    t0 = time.time()
    assert run_module("analysis.gates", "--run", str(tmp_path), "--k", "3") == 0
    assert time.time() - t0 < 60
    out = pd.read_csv(tmp_path / "report" / "gates-rerun.csv")
    assert out[["layer", "feature", "dla"]].values.tolist() == [[2, 4, 1.5]]  # 3 × 1/2


def test_causal_table_intervals_random_set_and_verdict():
    from analysis import gates_report as gr

    recs = []
    for i, c in enumerate(["A", "B", "C", "D"]):
        for n in (1, 2):
            base = -1.0 + 0.5 * i
            recs += [
                {"concept": c, "trial_number": n, "condition": k, "yes_no": v}
                for k, v in (
                    ("steered", base),
                    ("unsteered", -1.0),
                    ("ablate:gates", base + 1.0),
                    ("ablate:random", base),
                    ("patch:gates", -1.0 + 0.25 * (i + 1)),
                    ("patch:random", -1.0),
                )
            ]
    t = gr.causal_table(pd.DataFrame(recs), n_boot=500).set_index("condition")
    g = t.loc["ablate:gates"]
    assert (g["reference"], g["n"], g["n_concepts"], g["d_score"], g["d_score_lo"], g["d_score_hi"]) == (
        "steered",
        8,
        4,
        1.0,
        1.0,
        1.0,
    )
    # detection (score > 0): steered only D (0.5); ablated B, C, D (0.5, 1.0, 1.5)
    assert (g["detection_ref"], g["detection"], g["d_detection"]) == (0.25, 0.75, 0.5)
    assert t.loc["ablate:random", "d_score_hi"] == 0.0
    p = t.loc["patch:gates"]
    assert p["d_score"] == 0.625 and (p["d_score_lo"], p["d_score_hi"]) == (0.375, 0.875)  # bootstrap over 4 concepts
    attr = pd.DataFrame({"layer": [2] * 6, "feature": [0, 1, 2, 3, 4, 5], "a0": [1.0, 0, 2.0, 1.0, 0, 3.0]})
    gates_df = pd.DataFrame({"layer": [2, 2], "feature": [2, 5]})
    rnd = gr.random_set(attr, gates_df, {2: 6}, seed=0)
    assert sorted(rnd[2]) == [0, 3]  # the two active non-gates
    lines = gr.gate_verdict({"n_gates": 2, "n_inverted_v": 1}, t.reset_index())
    assert lines[-1].startswith("verdict: this model shows a gate")
    assert "separated from the random control" in lines[1] and "an effect" in lines[1]


def test_judged_detection_counts_only_injected_unforced_trials_at_the_layer():
    trials = pd.DataFrame(
        {
            "concept": ["A", "A", "A", "B", "B", "B"],
            "kind": ["injection"] * 3 + ["injection", "control", "injection"],
            "layer": [12, 12, 14, 12, 12, 12],
            "forced": [False, False, False, False, False, True],
            "detected": [True, False, True, True, True, False],
        }
    )
    assert gates.judged_detection(trials, 12).to_dict() == {"A": 0.5, "B": 1.0}


def test_the_paper_s_dla_from_stored_tables(tmp_path):
    """07_transcoder_feature_analysis.py (safety-research/introspection-mechanisms 5d5d9b4): `w_dec_unit = w_dec /
    (w_dec.norm(dim=-1, keepdim=True) + 1e-10)`, `delta_u = _avg_embed(yes_tokens) - _avg_embed(no_tokens)` over
    `("yes", "Yes", "YES")` / `("no", "No", "NO")` (07:390-391, 437-462), `logit_attribution = (w_dec_unit @ delta_u)
    × mean |concept correlation|` (07:466-472), correlations = Spearman over `ALL_STRENGTHS` (no 0, 07:70, 755-770);
    gates = the most negative. An inverted V (r = 0 across −2 … 2) gets DLA 0 there; the lab's DLA picks it."""
    from safetensors.torch import save_file

    from lab.steer.readouts import NO_VARIANTS, YES_VARIANTS

    _store_tables(tmp_path)
    dec1, dec2 = torch.zeros(8, 3), torch.zeros(8, 3)
    dec1[0] = torch.tensor([3.0, 0, 0])  # not unit: the paper normalises the row
    dec2[4], dec2[6] = torch.tensor([2.0, 0, 0]), torch.tensor([0, 3.0, 0])
    Transcoder(torch.zeros(3, 8), dec1, torch.zeros(8), torch.zeros(3)).save(
        tmp_path / "transcoders" / "layer1.safetensors"
    )
    Transcoder(torch.zeros(3, 8), dec2, torch.zeros(8), torch.zeros(3)).save(
        tmp_path / "transcoders" / "layer2.safetensors"
    )
    # the paper's spellings (no leading space): u_Yes = (0, 1, 0), u_No = (1, 0, 0); the spaced ones must not count
    yes = [[0.0, 1, 0] if not t.startswith(" ") else [5.0, 5, 5] for t in YES_VARIANTS]
    no = [[1.0, 0, 0] if not t.startswith(" ") else [9.0, 9, 9] for t in NO_VARIANTS]
    save_file(
        {"final_norm_weight": torch.ones(3), "unembed_yes_no": torch.tensor(yes + no)},
        str(tmp_path / "readout.safetensors"),
    )
    meta = {"layers": [1, 2], "yes_rows": list(range(6)), "no_rows": list(range(6, 12))}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    run = gates.load_run(tmp_path)
    t = gates.paper_dla_table(run).set_index(["layer", "feature"])
    r = 4.5 / (5 * 4.5) ** 0.5  # Spearman of (0, 0, g, 2g) against −2, −1, 1, 2 for both concepts
    assert t.loc[(1, 0), "unembed_score"] == pytest.approx(-1.0) and t.loc[(1, 0), "mean_abs_r"] == pytest.approx(r)
    assert t.loc[(1, 0), "dla_paper"] == pytest.approx(-r)
    assert t.loc[(2, 4), "unembed_score"] == pytest.approx(-1.0) and t.loc[(2, 4), "dla_paper"] == 0.0  # inverted V
    assert t.loc[(2, 6), "unembed_score"] == pytest.approx(1.0) and t.loc[(2, 6), "mean_abs_r"] == 0.0  # flat: NaN r
    paper = gates.select_gates_paper(run, k=3)
    assert paper[["layer", "feature"]].values.tolist() == [[1, 0]]
    assert run_module("analysis.gates", "--run", str(tmp_path), "--k", "3", "--dla", "paper") == 0
    assert pd.read_csv(tmp_path / "report" / "gates-rerun.csv")[["layer", "feature"]].values.tolist() == [[1, 0]]
    lab = gates.select_gates(run["features"], run["rows"], gates.dla_units_for(run), 3)
    picked = lab[["layer", "feature"]].values.tolist()  # through the final norm, to No − Yes, × unsteered activation
    assert picked[0] == [2, 4] and [1, 0] not in picked  # the lab ranks the inverted V first; 1/0 is silent unsteered


def test_gates_preset_ranks_as_the_paper():
    """configs/gates-gemma-3-27b-it.yaml against 07: top 200 most negative DLA (07:1460-1461), strengths −8 … 8
    (07:70), steering layer 37 → detector layer 38 (07:67)."""
    from jobs.gates import GatesConfig
    from lab.config import for_model, from_dict, load_yaml
    from tests.conftest import ROOT

    cfg = from_dict(GatesConfig, load_yaml(ROOT / "configs" / "gates-gemma-3-27b-it.yaml"))
    assert (cfg.dla, cfg.gates_k, cfg.dose.inject_layer, cfg.dose.layers[0]) == ("paper", 200, 37, 38)
    assert [s for s in cfg.dose.strengths if s != 0] == [-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0]
    demo = for_model(load_yaml(ROOT / "configs" / "gates-demo.yaml"))  # as jobs.cli loads it
    assert from_dict(GatesConfig, demo).dla == "lab"  # the default
