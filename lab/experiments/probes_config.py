"""The probes' config (localisation, strength discrimination; see lab/experiments/probes.py) and its resolved settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lab.config import ModelConfig, check_strength
from lab.errors import LabError
from lab.run.tracking import TrackingConfig
from lab.steer.concepts import DEFAULT_TEMPLATE


@dataclass(frozen=True)
class ProbesConfig:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model to probe"})
    probes: tuple[str, ...] = field(
        default=("localisation", "discrimination"), metadata={"help": "localisation and/or discrimination"}
    )
    concepts: str | tuple[str, ...] = field(default="first:10", metadata={"help": "as sweep.concepts"})
    layers: tuple[int, ...] = field(default=(), metadata={"help": "empty = the model's defaults"})
    strengths: tuple[float, ...] = field(default=(), metadata={"help": "empty = the model's defaults"})
    strength_mode: Literal["raw", "relative", "default"] = field(
        default="default", metadata={"help": "as sweep.strength_mode; default: the model's registry mode"}
    )
    kinds: tuple[str, ...] = field(
        default=("injection", "control", "random", "norm_matched"),
        metadata={"help": "injection (concept vector), control (nothing injected), random, norm_matched"},
    )
    n_sentences: int = field(default=5, metadata={"help": "localisation: numbered sentences (2..9)"})
    weak_fractions: tuple[float, ...] = field(
        default=(0.0, 0.5),
        metadata={"help": "discrimination: weaker passage strength = strength × fraction (0 = untouched)"},
    )
    repeats: int = field(default=1, metadata={"help": "sentence draws per setting"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "concept-vector prompt"})
    baseline: str = field(default="baseline_words", metadata={"help": "word list whose mean concept vectors subtract"})
    seed: int = field(default=0, metadata={"help": "sentence draws and random-vector controls"})
    batch_size: int = field(default=16, metadata={"help": "prompts per forward pass"})
    threads: int = field(default=2, metadata={"help": "torch intra-op threads (0 = leave torch's)"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="probes"), metadata={"help": "MLflow; one run"}
    )
    output_dir: str = field(default="results/probes", metadata={"help": "Parquet dataset of probe trials + report/"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-vector cache; empty: <model cache>/vectors"})

    def __post_init__(self) -> None:
        from lab.experiments.probes import KINDS, PROBES
        from lab.steer.concepts import select_concepts

        select_concepts(self.concepts)
        bad = [p for p in self.probes if p not in PROBES] + [k for k in self.kinds if k not in KINDS]
        if bad or not self.probes or not self.kinds:
            raise LabError(f"probes must be from {PROBES} and kinds from {KINDS} (got {bad[0] if bad else 'none'})")
        if not 2 <= self.n_sentences <= 9:
            raise LabError("n_sentences must be in 2..9 (one digit token per answer)")
        for s in self.strengths:
            check_strength(s)
        if any(not 0 <= f < 1 for f in self.weak_fractions) or not self.weak_fractions:
            raise LabError("weak_fractions must be in [0, 1)")
        if self.repeats < 1 or self.batch_size < 1:
            raise LabError("repeats and batch_size must be >= 1")


def settings(cfg: ProbesConfig) -> Any:
    """Concepts, layers, strengths and mode resolved against the model's registry defaults."""
    from lab.experiments.probes import ProbeSettings
    from lab.model.loading import spec_for
    from lab.protocol.trials import SweepConfig, resolve
    from lab.steer.concepts import select_concepts

    spec = spec_for(cfg.model.name)
    sweep = SweepConfig(
        concepts=cfg.concepts, layers=cfg.layers, strengths=cfg.strengths, strength_mode=cfg.strength_mode
    )
    layers, strengths, mode = resolve(
        sweep,
        spec.default_layers if spec else (),
        spec.default_strengths if spec else (),
        spec.strength_mode if spec else "raw",
    )
    if spec is not None and any(not 0 <= x < spec.n_layers for x in layers):
        raise LabError(f"a layer in {list(layers)} is out of range for {spec.name} (0..{spec.n_layers - 1})")
    return ProbeSettings(
        select_concepts(cfg.concepts),
        layers,
        strengths,
        mode,
        cfg.probes,
        cfg.kinds,
        cfg.n_sentences,
        cfg.weak_fractions,
        cfg.repeats,
        cfg.seed,
    )
