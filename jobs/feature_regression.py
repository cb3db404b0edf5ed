"""Transcoder features → per-concept detection rate: `python -m jobs.feature_regression --config <yaml>`.

Features: per concept, mean transcoder activations at the last prompt token under injection (lab/experiments/
feature_regression.py; cached transcoders of layers after the injection layer); target: its detection rate in a
stored sweep (`sweep_dir`, or one run here). Fits (layer set × N × α) fan out as Ray Tune trials over the stored
tables; headline, bootstrap interval, permutation and projection baselines from `analysis.regression`, which
`python -m analysis.regression --run <output_dir>` reruns without Ray.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from jobs.cli import Job, configure
from lab.config import ModelConfig
from lab.errors import LabError
from lab.experiments.concept_injection import JudgeConfig
from lab.experiments.feature_regression import GEMMA_SCOPE_PATTERN
from lab.run.parallel import FanOutConfig
from lab.run.tracking import TrackingConfig
from training.transcoder.fit import TranscoderConfig


@dataclass(frozen=True)
class FeatureRegressionConfig:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model injected into and read"})
    concepts: str | tuple[str, ...] = field(default="first:24", metadata={"help": "as sweep.concepts"})
    layer: int = field(default=12, metadata={"help": "injection layer"})
    strength: float = field(default=0.2, metadata={"help": "injection strength, in strength_mode units"})
    strength_mode: Literal["raw", "relative"] = field(default="relative", metadata={"help": "as sweep.strength_mode"})
    trials_per_concept: int = field(default=2, metadata={"help": "trial numbers n = 1..N (sweep and feature reads)"})
    dialogue_format: str = field(default="standard", metadata={"help": "the sweep's format (a base model: plain)"})
    temperature: float = field(default=0.0, metadata={"help": "the sweep's sampling temperature (0: greedy)"})
    feature_layers: tuple[int, ...] = field(default=(16, 20), metadata={"help": "transcoder layers (> layer)"})
    transcoder: TranscoderConfig = field(default_factory=TranscoderConfig, metadata={"help": "as jobs.transcoders"})
    transcoder_dir: str | None = field(default=None, metadata={"help": "cache; empty: <model cache>/transcoders"})
    gemma_scope: str | None = field(default=None, metadata={"help": "Gemma Scope 2 folder: load, do not train"})
    gemma_scope_pattern: str = field(default=GEMMA_SCOPE_PATTERN, metadata={"help": "per layer ({layer} filled)"})
    sweep_dir: str | None = field(default=None, metadata={"help": "stored sweep with the rates; empty: run one"})
    runner: FanOutConfig = field(
        default_factory=FanOutConfig, metadata={"help": "sweep, reads, fits; 0 actors: no Ray"}
    )
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "grades the sweep run when no sweep_dir"})
    ns: tuple[int, ...] = field(default=(10, 30, 100, 300, 1000, 0), metadata={"help": "top-N features; 0 = all"})
    alphas: tuple[float, ...] = field(default=(1.0, 10.0, 100.0, 1000.0, 10000.0), metadata={"help": "ridge penalties"})
    folds: int = field(default=10, metadata={"help": "grouped CV folds (by concept), >= 2"})
    seed: int = field(default=0, metadata={"help": "fold shuffle, bootstrap and permutation seed"})
    resamples: tuple[int, int] = field(default=(1000, 20), metadata={"help": "bootstrap, permutation draws"})
    inner_folds: int = field(default=5, metadata={"help": "nested estimate: inner grouped folds, >= 2"})
    single_layers: bool = field(default=True, metadata={"help": "also fit each layer alone; false: pooled only (04h)"})
    procedure: Literal["lab", "paper"] = field(
        default="lab", metadata={"help": "headline: lab = nested estimate; paper = 04h's (both always computed)"}
    )
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="feature-regression"),
        metadata={"help": "MLflow: parent run + a child per fit"},
    )
    output_dir: str = field(default="results/feature-regression", metadata={"help": "regression/, sweep/, cells.csv"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-vector cache; empty: <model cache>/vectors"})

    def __post_init__(self) -> None:
        if not self.feature_layers or any(f <= self.layer for f in self.feature_layers) or self.folds < 2:
            raise LabError(f"feature_layers must be non-empty and after the injection layer {self.layer}; folds >= 2")
        if self.inner_folds < 2 or "{layer}" not in self.gemma_scope_pattern:
            raise LabError("inner_folds must be >= 2 and gemma_scope_pattern must hold {layer}")


def main(argv: list[str] | None = None) -> int:
    """Build the feature table of --config, fan the fits out on Ray Tune, log parent + children; exit 0 / 2."""
    with Job(__name__, argv) as job:
        import time
        from functools import partial

        import pandas as pd

        from analysis import regression as rg
        from lab.config import flatten, to_dict
        from lab.experiments import feature_regression as fr
        from lab.experiments.concept_injection import InjectionConfig
        from lab.protocol.trials import SweepConfig
        from lab.protocol.words import select_concepts
        from lab.reporting import report
        from lab.run import tracking
        from lab.run.parallel import tune_map
        from lab.steer.injection import Strength
        from training.transcoder.train import default_dir, transcoders_for

        n = lambda c: (len(select_concepts(c.concepts)), f"concepts × {c.trials_per_concept} trials, then the fits")  # noqa: E731
        (cfg, _), t0 = (
            configure(FeatureRegressionConfig, __doc__, argv, n, "python -m analysis.regression --run {output}"),
            time.time(),
        )
        root, trials = Path(cfg.output_dir).resolve() / "regression", range(1, cfg.trials_per_concept + 1)
        sweep = SweepConfig(
            concepts=cfg.concepts, layers=(cfg.layer,), strengths=(cfg.strength,), strength_mode=cfg.strength_mode,
            trials_per_concept=cfg.trials_per_concept, controls=(), dialogue_format=cfg.dialogue_format,
            temperature=cfg.temperature,
        )  # fmt: skip
        sweep_dir = cfg.sweep_dir or str(Path(cfg.output_dir) / "sweep")
        off = TrackingConfig(enabled=False)
        inj = InjectionConfig(cfg.model, sweep, cfg.runner, cfg.judge, off, sweep_dir, cfg.cache_dir)
        rates = fr.sweep_rates(inj, cfg.layer, select_concepts(cfg.concepts), cfg.folds, run=not cfg.sweep_dir)
        if not (root / "spec.json").is_file():
            tc_dir = default_dir(cfg.transcoder_dir)
            strength = Strength(cfg.strength, cfg.strength_mode)
            reads = fr.ConceptReads(
                cfg.layer, strength, cfg.feature_layers, tuple(trials), cfg.cache_dir, cfg.dialogue_format
            )
            dicts = partial(transcoders_for, cache_dir=tc_dir, cfg=cfg.transcoder)
            tc_key = {"cache_dir": tc_dir, "config": asdict(cfg.transcoder)}
            if cfg.gemma_scope:
                dicts = partial(fr.load_gemma_scope, root=cfg.gemma_scope, pattern=cfg.gemma_scope_pattern)
                tc_key = {"gemma_scope": cfg.gemma_scope, "pattern": cfg.gemma_scope_pattern}
            rows = fr.read_codes(cfg.model, cfg.runner, sorted(rates), reads, dicts, tc_key, root.parent / "reads")
            spec = {"ns": list(cfg.ns), "alphas": list(cfg.alphas), "layers": list(cfg.feature_layers)}
            spec |= {"folds": cfg.folds, "seed": cfg.seed, "n_boot": cfg.resamples[0], "n_perm": cfg.resamples[1]}
            spec |= {"inner_folds": cfg.inner_folds, "single_layers": cfg.single_layers, "model": cfg.model.name}
            fr.write_tables(
                root, rates, rows, spec | {"injection_layer": cfg.layer, "transcoder": asdict(cfg.transcoder)}
            )
        spec = json.loads((root / "spec.json").read_text())
        grid = rg.fit_grid(root, spec, cfg.folds, cfg.seed)
        if cfg.runner.num_actors == 0:  # in process (no Ray): the same fits, one after another
            cells = pd.DataFrame([rg.fit_stored(g) for g in grid])
        else:
            cells = pd.DataFrame(tune_map(rg.fit_stored, grid, cfg.runner.address, root.parent / "tune", "cells"))
        cells = cells[["layers", "n", "n_req", "alpha", "r2"]]
        s = rg.summarize_fits(root, cells, cfg.procedure)
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
        rg.print_fits(s)
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
