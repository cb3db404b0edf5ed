"""The one table printer: widths fit the widest cell, `>` templates align right, intervals print with their n."""

from __future__ import annotations

import math

import pandas as pd

from lab.reporting.report import print_rates
from lab.reporting.tables import format_table, interval


def test_columns_fit_the_widest_cell_and_align_as_asked():
    rows = [{"layer": 2, "tpr": 0.25, "tpr_lo": 0.1, "tpr_hi": 0.48, "n_tpr": 12}, {"layer": 14, "tpr": math.nan}]
    assert format_table(rows, [("layer", "{layer:>}"), ("TPR [95% CI]", interval("tpr"))]) == [
        "layer  TPR [95% CI]",
        "    2  0.25 [0.10,0.48] n=12",
        "   14  n/a",
    ]


def test_signed_effects_and_a_data_frame():
    t = pd.DataFrame({"mode": ["knock_out"], "effect": [-0.5], "effect_lo": [-0.75], "effect_hi": [-0.125]})
    assert format_table(t, [("mode", "{mode}"), ("effect", interval("effect", False, 3, True))]) == [
        "mode       effect",
        "knock_out  -0.500 [-0.750,-0.125]",
    ]


def test_rates_table_ends_with_the_overall_row(capsys):
    row = {"tpr": 0.5, "tpr_lo": 0.2, "tpr_hi": 0.8, "n_tpr": 10, "fpr": 0.0, "fpr_lo": 0.0, "fpr_hi": 0.5, "n_fpr": 4}
    print_rates(pd.DataFrame([row | {"layer": 10, "strength": 4.0}]), row)
    assert capsys.readouterr().out.splitlines()[:3] == [
        "layer    strength  tpr               fpr               n (inj/ctl)",
        "10       4         0.50 [0.20,0.80]  0.00 [0.00,0.50]  10/4",
        "overall            0.50 [0.20,0.80]  0.00 [0.00,0.50]  10/4",
    ]
