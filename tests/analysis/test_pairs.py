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


def test_paper_pairing_in_raw_projection_units(tmp_path):
    """04c_bidirectional_steering.py: `DEFAULT_BIDIRECTIONAL_THRESHOLD = 200` (04c:66) in raw units of the projection
    on the unit ridge direction (04c:471-477, `if proj_diff < threshold`, 04c:489); the bucket default of the
    function is 200 (04c:455) but the command line passes `--within-category-bucket-size`, default None (04c:225),
    so the preset sorts by |Δprojection|. The lab's default reads threshold and bucket in std units."""
    import numpy as np
    import torch

    from analysis import geometry as geo
    from jobs.bidirectional import BidirectionalConfig
    from lab.config import from_dict, load_yaml
    from tests.conftest import ROOT

    rng = np.random.default_rng(0)
    concepts = [f"c{i}" for i in range(12)]
    V = {c: torch.tensor(rng.normal(size=6) * 300, dtype=torch.float32) for c in concepts}
    rates = pd.DataFrame({"concept": concepts, "n": 4, "detected": [i % 5 for i in range(12)]})
    rates["rate"] = rates["detected"] / 4
    adir = geo.save_inputs(tmp_path / "analysis", V, rates, None, 3)
    (adir / geo.RESULT).write_text(
        '{"tau": 0.5, "extra": {"layer": 3, "strength": 4.0, "strength_mode": "raw", "resid_norm": 1.0, "model": "m"}}'
    )
    raw = pr.plan_pairs(adir, 200, None, 1000, units="raw")
    X = torch.stack([V[c] for c in rates.concept]).double().numpy()
    proj = X @ geo.ridge_direction(X, rates["rate"].to_numpy(float))
    p = dict(zip(rates.concept, proj))
    assert raw.pairs and all(abs(p[a] - p[b]) < 200 for _, a, b in raw.pairs)
    std = pr.plan_pairs(adir, 200, None, 1000)  # 200 std: no limit in effect
    assert len(std.pairs) >= len(raw.pairs)
    cfg = from_dict(BidirectionalConfig, load_yaml(ROOT / "configs" / "bidirectional-gemma-3-27b-it.yaml"))
    assert (cfg.threshold, cfg.bucket, cfg.pair_units, cfg.max_pairs) == (200, None, "raw", 1000)
