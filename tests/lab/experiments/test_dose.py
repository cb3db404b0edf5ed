"""Dose calibration analysis (lab.experiments.dose) on a small synthetic sweep: coherent band, detection onset, snippet, plot."""

from __future__ import annotations

import math

import pandas as pd

from lab.experiments import dose
from lab.experiments.dose import DoseSettings


def _sweep() -> pd.DataFrame:
    """Layer 1: detection from strength 2, gibberish at 8. Layer 2: never detects, always coherent."""
    rows = []
    for layer in (1, 2):
        for s in (1.0, 2.0, 4.0, 8.0):
            for i in range(20):
                det = layer == 1 and s >= 2 and i < 15
                text = "blah " * 30 if (layer == 1 and s == 8) else "No, nothing unusual."
                common = dict(
                    layer=layer,
                    strength=s,
                    forced=False,
                    concept="Dust",
                    trial_id=f"{layer}{s}{i}",
                    strength_raw=s * 10,
                    strength_rel=s / 10,
                    identified=False,
                )
                rows.append(common | dict(kind="injection", detected=det, response=text, coherent=None))
                rows.append(common | dict(kind="control", detected=i < 1, response="No.", coherent=True))
                rows.append(common | dict(kind="random", detected=i < 2, response="No.", coherent=True))
    return pd.DataFrame(rows)


def test_bands_onset_and_snippet(tmp_path):
    table = dose.curve(_sweep())
    l1 = table[table["layer"] == 1].set_index("strength")
    assert list(l1["coherence"]) == [1.0, 1.0, 1.0, 0.0]  # the judge gave no coherence: the garbage detector decides
    assert [round(x, 6) for x in l1["strength_rel"]] == [0.1, 0.2, 0.4, 0.8] and l1.loc[2.0, "strength_raw"] == 20.0
    assert l1.loc[2.0, "tpr"] == 0.75 and l1.loc[2.0, "random_rate"] == 0.1
    b = dose.bands(table, DoseSettings(min_coherence=0.8)).set_index("layer")
    assert (b.loc[1, "coherent_lo"], b.loc[1, "coherent_hi"], b.loc[1, "detection_onset"]) == (1.0, 4.0, 2.0)
    assert b.loc[1, "recommended"] == [2.0, 4.0] and b.loc[1, "recommended_rel"] == [0.2, 0.4]
    assert not b.loc[2, "detects"] and math.isnan(b.loc[2, "detection_onset"])
    assert b.loc[2, "recommended"] == [1.0, 2.0, 4.0, 8.0]  # coherent throughout, flagged detects: false
    text = dose.snippet(b.reset_index(), "raw", DoseSettings(min_coherence=0.8))
    assert "sweep:\n  layers: [1, 2]\n  strengths: [1, 2, 4, 8]\n  strength_mode: raw" in text
    assert dose.plot_calibration(table, b.reset_index(), tmp_path / "dose.png", mode="raw").stat().st_size > 10_000
