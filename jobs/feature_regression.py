"""Transcoder features → per-concept detection rate: `python -m jobs.feature_regression --config <yaml>`.

Features: per concept, mean transcoder activations at the last prompt token under injection (lab/experiments/feature_table.py; cached
transcoders of layers after the injection layer); target: its detection rate in a stored sweep (`sweep_dir`, or one
run here). Fits (layer set × N × α) fan out as Ray Tune trials over the stored tables; headline, bootstrap interval,
permutation and projection baselines from `analysis.regression`, which `--run <output_dir>` reruns without Ray.
"""

from __future__ import annotations

import json
from pathlib import Path

from analysis.regression_inputs import FeatureRegressionConfig, rates_for, tables
from jobs.cli import configure, entry


@entry
def main(argv: list[str] | None = None) -> int:
    """Build the feature table of --config, fan the fits out on Ray Tune, log parent + children; exit 0 / 2."""
    import time

    import pandas as pd

    from analysis import regression as rg
    from lab.config import flatten, to_dict
    from lab.model import loading
    from lab.reporting import report
    from lab.run import tracking
    from lab.run.parallel import tune_map

    (cfg, _), t0 = configure(FeatureRegressionConfig, __doc__, argv), time.time()
    root = Path(cfg.output_dir).resolve() / "regression"
    rates = rates_for(cfg)
    if not (root / "spec.json").is_file():
        tables(cfg, loading.load(cfg.model), rates, root)
    spec = json.loads((root / "spec.json").read_text())
    grid = [
        {"root": str(root), "layers": lay, "n": n, "alpha": a, "folds": cfg.folds, "seed": cfg.seed}
        for lay in rg.layer_sets(spec)
        for n in spec["ns"]
        for a in spec["alphas"]
    ]
    if cfg.runner.num_actors == 0:  # in process (no Ray): the same fits, one after another
        cells = pd.DataFrame([rg.fit_stored(g) for g in grid])
    else:
        cells = pd.DataFrame(tune_map(rg.fit_stored, grid, cfg.runner.address, root.parent / "tune", "cells"))
    cells = cells[["layers", "n", "n_req", "alpha", "r2"]]
    s = rg.summarize(root, cells)
    png = rg.plot_curve(cells, s, root.parent / "r2_vs_n.png")
    cells.to_csv(root.parent / "cells.csv", index=False)
    tags = {"job": "feature_regression", "model": cfg.model.name}
    with report.parent_run(cfg.tracking, flatten(to_dict(cfg)), tags, "feature regression") as parent:
        if parent:
            tracking.log_metrics({k: v for k, v in s.items() if isinstance(v, (int, float))})
            tracking.log_artifacts(png, root.parent / "cells.csv", root / "spec.json")
        for r in cells.itertuples():
            params, name = {"layers": r.layers, "n": r.n, "alpha": r.alpha}, f"L{r.layers} N{r.n} a{r.alpha:g}"
            report.log_run(cfg.tracking, params, {"r2": r.r2}, tags=tags, run_name=name, parent_run_id=parent)
    report.announce(parent, cfg.tracking)
    print(f"{len(rates)} concepts, {len(cells)} fits [{time.time() - t0:.0f} s]; plot {png}")
    rg.print_summary(s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
