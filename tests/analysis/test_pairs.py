"""Pair matching as in the paper's code: each concept once, similar projections first, threshold respected."""

from __future__ import annotations

import pandas as pd

from analysis import pairs as pr


def test_match_pairs_rule():
    concepts = list("abcdef")
    proj = {"a": 0.0, "b": 0.1, "c": 5.0, "d": 5.05, "e": 9.0, "f": 20.0}
    rate = dict.fromkeys(concepts, 0.5)
    got = pr.match_pairs(concepts, proj, rate, threshold=1.0)
    assert sorted(tuple(sorted(p)) for p in got) == [("a", "b"), ("c", "d")]  # e, f: nothing within 1.0
    assert got[0][0] in "cd"  # the closest pair (|Δ| 0.05) is taken first
    everyone = pr.match_pairs(concepts, proj, rate)
    used = [c for p in everyone for c in p]
    assert len(everyone) == 3 and len(used) == len(set(used))  # each concept once
    assert pr.match_pairs(concepts, proj, rate, max_pairs=1) == got[:1]
    # buckets: within one |Δproj| bucket, the smaller detection-rate gap wins
    rate2 = {"a": 0.1, "b": 0.9, "c": 0.1, "d": 0.1, "e": 0.5, "f": 0.5}
    proj2 = {"a": 0, "b": 1, "c": 10, "d": 12}
    assert sorted(pr.match_pairs(list("abcd"), proj2, rate2)[0]) == ["a", "b"]  # by |Δproj| alone
    assert sorted(pr.match_pairs(list("abcd"), proj2, rate2, bucket=100)[0]) == ["a", "c"]  # one bucket: gap 0 first


def test_summarize_both_ways():
    df = pd.DataFrame(
        {
            "group": ["S-S", "S-S", "F-F"],
            "a": ["x", "y", "z"],
            "b": ["u", "v", "w"],
            "rate_ab": [0.5, 0.5, 0.0],
            "rate_ba": [0.5, 0.0, 0.5],
        }
    )
    s = pr.summarize_pairs(df, tau=0.25).set_index("group")
    assert s.loc["S-S", "both"] == 0.5 and s.loc["S-S", "either"] == 1.0 and s.loc["F-F", "both"] == 0.0
    assert s.loc["F-F", "b_minus_a"] == 1.0 and s.loc["S-S", "pairs"] == 2
