"""Transcoder features → per-concept detection rate: `python -m jobs.feature_regression --config <yaml>`.

Features: per concept, mean transcoder activations at the last prompt token under injection (lab/feature_table.py; cached
transcoders of layers after the injection layer); target: its detection rate in a stored sweep (`sweep_dir`, or one
run here). Fits (layer set × N × α) fan out as Ray Tune trials over the stored tables; headline, bootstrap interval,
permutation and projection baselines from `analysis.regression`, which `--run <output_dir>` reruns without Ray.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from analysis.transcoder_training import TranscoderConfig
from jobs.cli import entry, load_config, parser
from lab.config import ModelConfig
from lab.errors import LabError
from lab.parallel import RunnerConfig
from lab.sweep import JudgeConfig
from lab.tracking import TrackingConfig


@dataclass(frozen=True)
class FeatureRegressionConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    concepts: str | tuple[str, ...] = "first:24"
    layer: int = field(default=12, metadata={"help": "injection layer"})
    strength: float = 0.2
    strength_mode: Literal["raw", "relative"] = "relative"
    trials_per_concept: int = 2
    feature_layers: tuple[int, ...] = field(default=(16, 20), metadata={"help": "transcoder layers (> layer)"})
    transcoder: TranscoderConfig = field(default_factory=TranscoderConfig)
    transcoder_dir: str | None = None  # default: <model cache>/transcoders
    sweep_dir: str | None = field(default=None, metadata={"help": "stored sweep with the rates; empty: run one"})
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    ns: tuple[int, ...] = field(default=(10, 30, 100, 300, 1000, 0), metadata={"help": "top-N features; 0 = all"})
    alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0)
    folds: int = 10
    seed: int = 0
    resamples: tuple[int, int] = field(default=(1000, 20), metadata={"help": "bootstrap, permutation draws"})
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="feature-regression"))
    output_dir: str = "results/feature-regression"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.feature_layers or any(f <= self.layer for f in self.feature_layers) or self.folds < 2:
            raise LabError(f"feature_layers must be non-empty and after the injection layer {self.layer}; folds >= 2")


def tables(cfg: FeatureRegressionConfig, lm, rates: dict[str, float], root: Path) -> None:
    """features / feature_meta / vectors / spec under `root` (see analysis/regression.py)."""
    import torch

    from analysis.transcoder_training import default_dir, transcoder_for
    from lab.concepts import concept_vectors
    from lab.embedded import default_cache_dir
    from lab.feature_table import feature_table, write_vectors
    from lab.sweep import model_key

    concepts, cache = sorted(rates), cfg.cache_dir or str(default_cache_dir() / "vectors")
    v = {
        c: x
        for (c, _), x in concept_vectors(lm, concepts, [cfg.layer], cache_dir=cache, model_key=model_key(cfg.model))[
            0
        ].items()
    }
    strengths = {
        c: cfg.strength * (x.resid_norm / x.norm if cfg.strength_mode == "relative" else 1.0) for c, x in v.items()
    }
    tcs = {L: transcoder_for(lm, L, default_dir(cfg.transcoder_dir), cfg.transcoder) for L in cfg.feature_layers}
    feats, meta = feature_table(
        lm,
        concepts,
        {c: x.vector for c, x in v.items()},
        strengths,
        cfg.layer,
        tcs,
        range(1, cfg.trials_per_concept + 1),
    )
    root.mkdir(parents=True, exist_ok=True)
    feats.assign(detection_rate=[rates[c] for c in concepts]).to_parquet(root / "features.parquet")
    meta.to_parquet(root / "feature_meta.parquet")
    write_vectors(root / "vectors.parquet", concepts, torch.stack([x.vector for x in v.values()]))
    spec = {
        "ns": sorted({min(n, len(meta)) if n else len(meta) for n in cfg.ns}),
        "alphas": list(cfg.alphas),
        "layers": list(cfg.feature_layers),
        "folds": cfg.folds,
        "seed": cfg.seed,
        "n_boot": cfg.resamples[0],
        "n_perm": cfg.resamples[1],
        "injection_layer": cfg.layer,
        "transcoder": asdict(cfg.transcoder),
    }
    (root / "spec.json").write_text(json.dumps(spec, indent=1))


def rates_for(cfg: FeatureRegressionConfig) -> dict[str, float]:
    from lab import store
    from lab.concepts import select_concepts
    from lab.feature_table import detection_rates as rates_of
    from lab.sweep import InjectionConfig, run_sweep
    from lab.trials import SweepConfig

    sweep_dir = cfg.sweep_dir or str(Path(cfg.output_dir) / "sweep")
    if not cfg.sweep_dir:
        sweep = SweepConfig(
            concepts=cfg.concepts,
            layers=(cfg.layer,),
            strengths=(cfg.strength,),
            strength_mode=cfg.strength_mode,
            trials_per_concept=cfg.trials_per_concept,
            controls=(),
        )
        run_sweep(
            InjectionConfig(
                cfg.model, sweep, cfg.runner, cfg.judge, TrackingConfig(enabled=False), sweep_dir, cfg.cache_dir
            ),
            progress=False,
        )
    if len(rates := rates_of(store.read(sweep_dir), cfg.layer, select_concepts(cfg.concepts))) < cfg.folds:
        raise LabError(f"{sweep_dir} has rates for {len(rates)} of the concepts; need >= folds ({cfg.folds})")
    return rates


@entry
def main(argv: list[str] | None = None) -> int:
    """Build the feature table of --config, fan the fits out on Ray Tune, log parent + children; exit 0 / 2."""
    import time

    import pandas as pd

    from analysis import regression as rg
    from lab import models, tracking
    from lab.config import flatten, to_dict

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg, t0 = load_config(FeatureRegressionConfig, args), time.time()
    root = Path(cfg.output_dir).resolve() / "regression"
    rates = rates_for(cfg)
    if not (root / "spec.json").is_file():
        tables(cfg, models.load(cfg.model), rates, root)
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
        from ray import tune

        from lab.parallel import connect

        connect(cfg.runner.address)
        tuner = tune.Tuner(
            tune.with_resources(lambda c: rg.fit_stored(c["cell"]), {"cpu": 0.5}),
            param_space={"cell": tune.grid_search(grid)},
            run_config=tune.RunConfig(storage_path=str(root.parent / "tune"), name="cells", verbose=0),
        )
        cells = pd.DataFrame([r.metrics for r in tuner.fit()])
    cells = cells[["layers", "n", "n_req", "alpha", "r2"]]
    s = rg.summarize(root, cells)
    png = rg.plot_curve(cells, s, root.parent / "r2_vs_n.png")
    cells.to_csv(root.parent / "cells.csv", index=False)
    if cfg.tracking.enabled:
        tags = {"job": "feature_regression", "model": cfg.model.name}
        with tracking.run(cfg.tracking, flatten(to_dict(cfg)), tags=tags, run_name="feature regression") as parent:
            tracking.log_metrics({k: v for k, v in s.items() if isinstance(v, (int, float))})
            tracking.log_artifacts(png, root.parent / "cells.csv", root / "spec.json")
            for r in cells.itertuples():
                with tracking.run(
                    cfg.tracking,
                    {"layers": r.layers, "n": r.n, "alpha": r.alpha},
                    tags=tags,
                    run_name=f"L{r.layers} N{r.n} a{r.alpha:g}",
                    parent_run_id=parent.info.run_id,
                ):
                    tracking.log_metrics({"r2": r.r2})
        print(f"mlflow:  parent run {parent.info.run_id} + {len(cells)} children in '{cfg.tracking.experiment}'")
    print(f"{len(rates)} concepts, {len(cells)} fits [{time.time() - t0:.0f} s]; plot {png}")
    rg.print_summary(s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
