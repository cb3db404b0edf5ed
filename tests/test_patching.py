"""Activation patching on the embedded model: patching a run with its own activations changes nothing."""

from __future__ import annotations

import pytest
import torch

from lab.experiments.patching import PatchWorker, build_batch


def _batch(lm, n_rows=1):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(n_rows, 576, generator=g)
    v = v / v.norm(dim=1, keepdim=True) * 8.0
    return build_batch(lm, "b0", ["Dust", "Bread"][:n_rows], [1, 2][:n_rows], v, [1.0] * n_rows, layer=12)


def test_self_patch_is_bit_identical(embedded):
    w = PatchWorker(embedded)
    same = w.self_patch(_batch(embedded), "mlp_out.14")
    # knock-out with the steered run's own activations / knock-in with the clean run's own: the metric is unchanged
    assert same["steered_self"] == same["steered"] and same["clean_self"] == same["clean"]
    assert same["steered"] != same["clean"]  # while the injection itself does move it


@pytest.mark.slow
def test_cell_has_every_mode(embedded):
    w = PatchWorker(embedded)
    b = _batch(embedded, 2)
    cell = w.cell(b, 14, "attn_out", ["attn_out.14"])
    assert set(cell) == {
        "clean",
        "steered",
        "forced_clean",
        "forced_steered",
        "knock_out",
        "knock_in",
        "forced_knock_out",
    }
    assert all(len(v) == 2 for v in cell.values())
    # knocking out the attention output at one later layer moves the steered metric (towards clean or not)
    assert cell["knock_out"] != cell["steered"] and cell["knock_in"] != cell["clean"]


def test_effects_average_per_concept_then_interval(tmp_path, capsys):
    import pandas as pd

    from analysis.patching import effects, report

    rows = []
    for c, ko in (("A", 1.0), ("B", 2.0), ("C", 3.0)):
        for n in (1, 2):  # two trials of one concept count once
            rows.append(
                {
                    "concept": c,
                    "trial_number": n,
                    "patch_layer": 14,
                    "component": "mlp_out",
                    "clean": 0.0,
                    "steered": 1.0,
                    "knock_out": ko,
                    "knock_in": 0.5,
                    "forced_clean": -3.0,
                    "forced_steered": -2.0,
                    "forced_knock_out": -2.0,
                }
            )
    t = effects(pd.DataFrame(rows)).set_index("mode")
    assert t.loc["knock_out", "effect"] == 1.0 and t.loc["knock_out", "n_concepts"] == 3
    assert round(t.loc["knock_out", "effect_hi"] - 1.0, 4) == 2.4841  # t(2) = 4.303 × sd 1 / √3
    assert t.loc["knock_in", "effect"] == 0.5 and t.loc["forced_knock_out", "effect"] == 0.0
    table, inj, png = report(pd.DataFrame(rows), tmp_path)  # the job's report: CSV, plot, printed table
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["mode", "comp", "layer", "effect"] and png.is_file()
    assert out[-1].startswith("injection moves Yes−No from +0.000 (clean) to +1.000 (steered)")
