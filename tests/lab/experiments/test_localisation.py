"""Localisation: per-layer rates with Wilson intervals and the across-concept correlation, from stored rows."""

from __future__ import annotations

import pandas as pd

from analysis.localisation import by_layer
from jobs.localisation import LocalisationConfig
from lab.config import from_dict


def _rows():
    rows = []
    for layer, det in ((4, [1, 1, 0, 0]), (8, [1, 0, 0, 0])):
        for i, c in enumerate("ABCD"):
            for n in (1, 2):
                rows.append(
                    {
                        "layer": layer,
                        "concept": c,
                        "kind": "injection",
                        "forced": False,
                        "detected": bool(det[i] and n == 1 or det[i] and layer == 4),
                        "identified": None,
                    }
                )
                rows.append(
                    {
                        "layer": layer,
                        "concept": c,
                        "kind": "injection",
                        "forced": True,
                        "detected": None,
                        "identified": bool(i < 2 if layer == 4 else i == 3),
                    }
                )
            rows.append(
                {"layer": layer, "concept": c, "kind": "control", "forced": False, "detected": True, "identified": None}
            )
    return pd.DataFrame(rows)


def test_by_layer_rates_and_correlation():
    t = by_layer(_rows())
    assert t["layer"].tolist() == [4, 8]
    assert t["detection"].tolist() == [0.5, 0.125] and t["n_detection"].tolist() == [8, 8]  # controls not counted
    assert t["forced_id"].tolist() == [0.5, 0.25]
    assert round(t.loc[0, "detection_lo"], 4) == 0.2152 and round(t.loc[0, "detection_hi"], 4) == 0.7848
    assert t.loc[0, "corr"] == 1.0  # the same two concepts detect and identify at layer 4
    assert round(t.loc[1, "corr"], 4) == -0.3333


def test_layers_from_stride():
    cfg = from_dict(LocalisationConfig, {"model": {"name": "smollm2-135m"}, "first_layer": 2, "layer_stride": 8})
    inj = cfg.injection()
    assert inj.sweep.layers == (2, 10, 18, 26) and inj.sweep.forced_identification


def test_rerun_from_stored_rows_prints_the_table(tmp_path, capsys):
    from lab.run import store
    from tests.entry import run_module

    rows = _rows().assign(trial_id=lambda d: [f"t{i}" for i in range(len(d))])
    store.write_shard(tmp_path, rows.to_dict("records"))
    assert run_module("analysis.localisation", "--run", str(tmp_path)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["layer", "detection"] and out[1].split()[0] == "4" and out[2].split()[0] == "8"
    assert (tmp_path / "report" / "localisation_rerun.png").is_file()
