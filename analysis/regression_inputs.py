"""Inputs of the transcoder-feature regression (jobs/feature_regression.py): its config, the per-concept detection
rates from a stored (or freshly run) sweep, and the stored tables the fits read (features, feature_meta, vectors,
spec under <output_dir>/regression; `python -m analysis.regression --run` refits from them without a model)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from analysis.transcoder_training import TranscoderConfig
from lab.config import ModelConfig
from lab.errors import LabError
from lab.experiments.concept_injection import JudgeConfig
from lab.run.parallel import RunnerConfig
from lab.run.tracking import TrackingConfig


@dataclass(frozen=True)
class FeatureRegressionConfig:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model injected into and read"})
    concepts: str | tuple[str, ...] = field(default="first:24", metadata={"help": "as sweep.concepts"})
    layer: int = field(default=12, metadata={"help": "injection layer"})
    strength: float = field(default=0.2, metadata={"help": "injection strength, in strength_mode units"})
    strength_mode: Literal["raw", "relative"] = field(default="relative", metadata={"help": "as sweep.strength_mode"})
    trials_per_concept: int = field(default=2, metadata={"help": "trial numbers n = 1..N (sweep and feature reads)"})
    feature_layers: tuple[int, ...] = field(default=(16, 20), metadata={"help": "transcoder layers (> layer)"})
    transcoder: TranscoderConfig = field(default_factory=TranscoderConfig, metadata={"help": "as jobs.transcoders"})
    transcoder_dir: str | None = field(default=None, metadata={"help": "cache; empty: <model cache>/transcoders"})
    sweep_dir: str | None = field(default=None, metadata={"help": "stored sweep with the rates; empty: run one"})
    runner: RunnerConfig = field(default_factory=RunnerConfig, metadata={"help": "sweep, fits; num_actors 0: no Ray"})
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "grades the sweep run when no sweep_dir"})
    ns: tuple[int, ...] = field(default=(10, 30, 100, 300, 1000, 0), metadata={"help": "top-N features; 0 = all"})
    alphas: tuple[float, ...] = field(default=(1.0, 10.0, 100.0, 1000.0, 10000.0), metadata={"help": "ridge penalties"})
    folds: int = field(default=10, metadata={"help": "grouped CV folds (by concept), >= 2"})
    seed: int = field(default=0, metadata={"help": "fold shuffle, bootstrap and permutation seed"})
    resamples: tuple[int, int] = field(default=(1000, 20), metadata={"help": "bootstrap, permutation draws"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="feature-regression"),
        metadata={"help": "MLflow: parent run + a child per fit"},
    )
    output_dir: str = field(default="results/feature-regression", metadata={"help": "regression/, sweep/, cells.csv"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-vector cache; empty: <model cache>/vectors"})

    def __post_init__(self) -> None:
        if not self.feature_layers or any(f <= self.layer for f in self.feature_layers) or self.folds < 2:
            raise LabError(f"feature_layers must be non-empty and after the injection layer {self.layer}; folds >= 2")


def tables(cfg: FeatureRegressionConfig, lm: Any, rates: dict[str, float], root: Path) -> None:
    """features / feature_meta / vectors / spec under `root` (see analysis/regression.py)."""
    import torch

    from analysis.transcoder_training import default_dir, transcoders_for
    from lab.experiments.concept_injection import model_key
    from lab.experiments.feature_table import feature_table, write_vectors
    from lab.model.embedded import default_cache_dir
    from lab.steer.concepts import concept_vectors

    concepts, cache = sorted(rates), cfg.cache_dir or str(default_cache_dir() / "vectors")
    vecs, _ = concept_vectors(lm, concepts, [cfg.layer], cache_dir=cache, model_key=model_key(cfg.model))
    v = {c: x for (c, _), x in vecs.items()}
    strengths = {
        c: cfg.strength * (x.resid_norm / x.norm if cfg.strength_mode == "relative" else 1.0) for c, x in v.items()
    }
    tcs = transcoders_for(lm, cfg.feature_layers, default_dir(cfg.transcoder_dir), cfg.transcoder)
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
    """Per-concept detection rate at the injection layer from `sweep_dir`, or from a sweep run into <output_dir>/sweep."""
    from lab.experiments.concept_injection import InjectionConfig, run_sweep
    from lab.experiments.feature_table import detection_rates as rates_of
    from lab.protocol.trials import SweepConfig
    from lab.run import store
    from lab.steer.concepts import select_concepts

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
