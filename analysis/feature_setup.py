"""What the feature jobs (dose_response, gates) share — not a job itself: the transcoder source section and the
loading of model, concept vectors and transcoders for one model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.config import ModelConfig
from lab.errors import LabError
from lab.experiments.features import DoseConfig
from lab.run.tracking import TrackingConfig
from lab.steer.concepts import DEFAULT_TEMPLATE


@dataclass(frozen=True)
class TranscoderSource:
    dir: str | None = field(
        default=None,
        metadata={
            "help": "load <dir>/layer<L>.safetensors (or a Gemma Scope 2 directory <dir>/layer_<L>_*); empty: train"
        },
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "trained transcoders; empty: <lab cache>/transcoders"}
    )
    train: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "overrides of analysis.transcoder_training.TranscoderConfig (n_features, max_tokens, epochs, ...)"
        },
    )


@dataclass(frozen=True)
class FeatureJobConfig:
    """The sections both feature jobs (dose_response, gates) have; each job adds its own and its defaults."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model whose features are read"})
    dose: DoseConfig = field(default_factory=DoseConfig, metadata={"help": "concepts, strengths, layers injected/read"})
    transcoders: TranscoderSource = field(default_factory=TranscoderSource, metadata={"help": "feature dictionaries"})
    gates_k: int = field(default=20, metadata={"help": "gate candidates (most No-promoting features)"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "concept-vector prompt ('{word}' is filled)"})
    baseline: str = field(default="baseline_words", metadata={"help": "word list whose mean is subtracted"})
    threads: int = field(default=2, metadata={"help": "torch intra-op threads"})
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata={"help": "MLflow store and experiment"})
    output_dir: str = field(default="results/features", metadata={"help": "results folder (each job sets its own)"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-vector cache; empty: <lab cache>/vectors"})

    def __post_init__(self) -> None:
        if self.gates_k < 1:
            raise LabError("gates_k must be >= 1")


def transcoders(lm: Any, layers: tuple[int, ...], src: TranscoderSource) -> dict[int, Any]:
    """One transcoder per layer: loaded from `src.dir`, or trained once per (model, layer, config) and cached (the
    missing layers share one activation pass)."""
    from analysis.transcoders import load

    if not src.dir:
        from analysis.transcoder_training import TranscoderConfig, transcoders_for
        from lab.config import from_dict
        from lab.model.embedded import default_cache_dir

        cfg = from_dict(TranscoderConfig, dict(src.train), "transcoders.train")
        return transcoders_for(lm, layers, src.cache_dir or default_cache_dir() / "transcoders", cfg)
    out: dict[int, Any] = {}
    root = Path(src.dir)
    for lay in layers:
        cand = [root / f"layer{lay}.safetensors", *sorted(root.glob(f"layer_{lay}_*"))]
        hit = next((c for c in cand if c.exists()), None)
        if hit is None:
            raise LabError(f"no transcoder for layer {lay} in {root} (expected layer{lay}.safetensors)")
        out[lay] = load(hit)
    return out


def setup(
    model: ModelConfig,
    concepts: Any,
    inject_layer: int,
    layers: tuple[int, ...],
    src: TranscoderSource,
    template: str,
    baseline: str,
    cache_dir: str | None,
) -> tuple[Any, dict[str, Any], dict[int, Any]]:
    """(loaded model, {concept: ConceptVector at inject_layer}, {layer: transcoder})."""
    from lab.experiments.concept_injection import model_key
    from lab.model import loading
    from lab.model.embedded import default_cache_dir
    from lab.steer.concepts import concept_vectors, select_concepts

    lm = loading.load(model)
    for lay in (inject_layer, *layers):
        lm.check_layer(lay)
    words = select_concepts(concepts)
    vecs, _ = concept_vectors(
        lm,
        words,
        [inject_layer],
        template,
        baseline,
        cache_dir or str(default_cache_dir() / "vectors"),
        model_key(model),
    )
    return lm, {c: vecs[(c, inject_layer)] for c in words}, transcoders(lm, layers, src)
