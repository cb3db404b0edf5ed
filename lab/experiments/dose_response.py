"""The dose response of feature dictionaries, on the one fan-out (`lab.run.experiment.execute`).

Per concept, the injection-trial prompt at every signed strength of the grid × trial number, read by a dictionary at
each read layer (`lab.experiments.features.dose_rows`). Through `execute`:

    plan     one trial per concept; its id hashes model, grid, dictionary source and concept
    prepare  on the first replica: concept vectors at the injection layer, the dictionaries (a function of (model,
             layers) the job passes: loaded from a folder or trained and cached, training/transcoder), the prompts;
             then <out>/meta.json is checked against this run (another config or model is refused) or written with
             readout.safetensors, vectors.safetensors and transcoders/layer<L>.safetensors
    work     a shard of concepts → per concept its feature and row records
    store    in the driver (execute's `grade` step, before the shard is stored): per concept features/<slug>.parquet
             and rows/<slug>.parquet, written atomically; execute then stores one ledger row per concept (trial id,
             concept, counts) as a shard in <out>, so a rerun does only the concepts missing

The tables (what `analysis.gates.load_run` reads): features/ (concept, strength, trial_number, layer, feature,
activation: only non-zero activations) and rows/ (one row per forward pass). Strengths are `Strength(s,
grid.strength_mode)` of each concept's vector; `strength_raw` is the multiplier applied.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lab.config import ModelConfig, to_dict
from lab.errors import LabError
from lab.experiments.features import ConceptTrial
from lab.protocol.trials import trial_id
from lab.run.parallel import FanOutConfig
from lab.run.tracking import TrackingConfig
from lab.steer.concepts import DEFAULT_TEMPLATE
from lab.steer.injection import Strength

Dictionaries = Callable[[Any, tuple[int, ...]], dict[int, Any]]  # (loaded model, layers) → {layer: dictionary}


@dataclass(frozen=True)
class DoseResponseGrid:
    """What a dose-response pass reads: concepts × signed strengths × trial numbers, injected at one layer, read by
    a feature dictionary at each of `layers` (all after the injection layer)."""

    concepts: str | tuple[str, ...] = field(default="first:12", metadata={"help": "as sweep.concepts"})
    inject_layer: int = field(default=12, metadata={"help": "block whose resid_post gets the concept vector"})
    layers: tuple[int, ...] = field(default=(16, 22, 27), metadata={"help": "transcoder layers (> inject_layer)"})
    strengths: tuple[float, ...] = field(
        default=(-0.4, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.4), metadata={"help": "signed; needs 0 (unsteered)"}
    )
    strength_mode: Literal["raw", "relative"] = field(
        default="relative", metadata={"help": "raw: multiplier of v; relative: ‖s·v‖/‖resid‖ at the injection layer"}
    )
    trial_numbers: tuple[int, ...] = field(default=(1, 2, 3), metadata={"help": "n in the trial prompt's 'Trial {n}'"})
    prompt_variant: str = field(default="original", metadata={"help": "trial-prompt variant (lab/data/prompts.yaml)"})
    dialogue_format: str = field(default="standard", metadata={"help": "dialogue format (lab/data/prompts.yaml)"})
    batch_size: int = field(default=16, metadata={"help": "(strength, trial number) rows per forward pass"})

    def __post_init__(self) -> None:
        from lab.protocol.words import select_concepts

        select_concepts(self.concepts)
        if not self.layers or any(lay <= self.inject_layer for lay in self.layers):
            raise LabError(f"dose.layers must be non-empty and after inject_layer {self.inject_layer}")
        if not self.strengths or any(not math.isfinite(x) for x in self.strengths) or 0.0 not in self.strengths:
            raise LabError("dose.strengths must be finite and include 0 (the unsteered reference)")
        if not self.trial_numbers or self.batch_size < 1:
            raise LabError("dose.trial_numbers must be non-empty and batch_size >= 1")


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
            "help": "overrides of training.transcoder.fit.TranscoderConfig (n_features, max_tokens, epochs, ...)"
        },
    )


@dataclass(frozen=True)
class FeatureJobConfig:
    """The sections both feature jobs (dose_response, gates) have; each job adds its own and its defaults."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model whose features are read"})
    dose: DoseResponseGrid = field(
        default_factory=DoseResponseGrid, metadata={"help": "concepts, strengths, layers injected/read"}
    )
    transcoders: TranscoderSource = field(default_factory=TranscoderSource, metadata={"help": "feature dictionaries"})
    gates_k: int = field(default=20, metadata={"help": "gate candidates (most No-promoting features)"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "concept-vector prompt ('{word}' is filled)"})
    baseline: str = field(default="baseline_words", metadata={"help": "word list whose mean is subtracted"})
    threads: int = field(
        default=2, metadata={"help": "torch intra-op threads here (and of the replica when in process)"}
    )
    runner: FanOutConfig = field(
        default_factory=lambda: FanOutConfig(num_actors=0, shard_size=1),
        metadata={"help": "num_actors 0: in this process; shard_size: concepts (gates: forward batches) per shard"},
    )
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata={"help": "MLflow store and experiment"})
    output_dir: str = field(default="results/features", metadata={"help": "results folder (each job sets its own)"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-vector cache; empty: <lab cache>/vectors"})

    def __post_init__(self) -> None:
        if self.gates_k < 1:
            raise LabError("gates_k must be >= 1")

    def fanout(self) -> FanOutConfig:
        """The runner `execute` gets: in process, the replica runs with `threads`."""
        return replace(self.runner, threads=self.threads) if self.runner.num_actors == 0 else self.runner


@dataclass(frozen=True)
class FeatureReads:
    """What every shard of a feature pass needs: {concept: ConceptVector} at the injection layer, {layer:
    dictionary} and the trial prompts."""

    vectors: dict[str, Any]
    dictionaries: dict[int, Any]
    prompts: list[Any]
    grid: DoseResponseGrid


def dose_key(cfg: FeatureJobConfig, model: ModelConfig) -> dict[str, Any]:
    """What a stored dose response depends on (its trial ids hash it)."""
    from lab.experiments.concept_injection import model_key

    return {"model": model_key(model), "dose": to_dict(cfg.dose), "transcoders": to_dict(cfg.transcoders)}


def dose_trials(cfg: FeatureJobConfig, model: ModelConfig) -> list[ConceptTrial]:
    from lab.protocol.words import select_concepts

    key = dose_key(cfg, model)
    return [ConceptTrial(trial_id(**key, concept=c), c) for c in select_concepts(cfg.dose.concepts)]


def prepare_reads(
    lm: Any, cfg: FeatureJobConfig, key: str, dictionaries: Dictionaries, out: str | None = None
) -> FeatureReads:
    """Concept vectors, dictionaries and prompts on this replica's model; with `out`, its header checked or written."""
    from lab.experiments.features import trial_prompts
    from lab.model.embedded import default_cache_dir
    from lab.protocol.words import select_concepts
    from lab.steer.concepts import concept_vectors

    d = cfg.dose
    for lay in (d.inject_layer, *d.layers):
        lm.check_layer(lay)
    words = select_concepts(d.concepts)
    cache = cfg.cache_dir or str(default_cache_dir() / "vectors")
    vecs, _ = concept_vectors(lm, words, [d.inject_layer], cfg.template, cfg.baseline, cache, key)
    reads = FeatureReads(
        {c: vecs[(c, d.inject_layer)] for c in words},
        dictionaries(lm, d.layers),
        trial_prompts(lm, d.trial_numbers, d.prompt_variant, d.dialogue_format),
        d,
    )
    if out is not None:
        dose_header(lm, reads, Path(out))
    return reads


def dictionary_fingerprint(dictionary: Any) -> dict[str, Any]:
    """A dictionary's identity (hash of its weights) and its quality figures when it has them."""
    import torch

    w = torch.cat([dictionary.w_enc.flatten(), dictionary.w_dec.flatten()]).float().contiguous()
    meta = getattr(dictionary, "meta", None) or {}
    return {
        "sha": hashlib.sha256(w.numpy().tobytes()).hexdigest()[:16],
        "n_features": int(dictionary.w_dec.shape[0]),
        **{k: meta[k] for k in ("fve", "l0", "dead_frac") if k in meta},
    }


def dose_header(lm: Any, reads: FeatureReads, out: Path) -> None:
    """meta.json (refused when it names another config, model or dictionaries), readout.safetensors,
    vectors.safetensors and transcoders/layer<L>.safetensors: what `analysis.gates.load_run` needs besides the
    tables."""
    from safetensors.torch import save_file

    from lab.steer.norms import readout_tensors

    out.mkdir(parents=True, exist_ok=True)
    t, ids = readout_tensors(lm, reads.grid.layers)
    info = {
        "config": to_dict(reads.grid),
        "model": lm.name,
        "layers": list(reads.grid.layers),
        **ids,
        "transcoders": {str(lay): dictionary_fingerprint(d) for lay, d in reads.dictionaries.items()},
    }
    mpath = out / "meta.json"
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        if {k: old.get(k) for k in info} != json.loads(json.dumps(info)):
            raise LabError(f"{out} holds a dose response of another config or model; use another output_dir")
        return
    save_file(t, str(out / "readout.safetensors"))
    vectors = {c: v.vector.float().contiguous() for c, v in reads.vectors.items()}
    save_file(vectors, str(out / "vectors.safetensors"))
    (out / "transcoders").mkdir(exist_ok=True)
    for lay, d in reads.dictionaries.items():
        d.save(out / "transcoders" / f"layer{lay}.safetensors")
    mpath.write_text(json.dumps(info, indent=1))


def read_doses(lm: Any, shard: list[ConceptTrial], reads: FeatureReads) -> list[dict[str, Any]]:
    from lab.experiments.features import dose_rows

    d = reads.grid
    out = []
    for t in shard:
        cv = reads.vectors[t.concept]
        strengths = [(s, Strength(s, d.strength_mode).raw(cv.norm, cv.resid_norm)) for s in d.strengths]
        feats, rows = dose_rows(
            lm, t.concept, cv.vector, strengths, reads.prompts, d.inject_layer, reads.dictionaries, d.batch_size
        )
        out.append({"trial_id": t.trial_id, "concept": t.concept, "features": feats, "rows": rows})
    return out


FEATURE_COLUMNS = ("concept", "strength", "trial_number", "layer", "feature", "activation")
FEATURE_TYPES = {
    "concept": str,
    "strength": "float64",
    "trial_number": "int64",
    "layer": "int64",
    "feature": "int64",
    "activation": "float32",
}


def concept_slug(concept: str) -> str:
    return hashlib.sha256(concept.encode()).hexdigest()[:12]


def _write(df: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def store_dose_tables(out: str | os.PathLike, done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write each finished concept's features/ and rows/ file; the ledger rows `execute` stores for them."""
    import pandas as pd

    ledger = []
    for r in done:
        table = pd.DataFrame(r["features"], columns=list(FEATURE_COLUMNS)).astype(FEATURE_TYPES)
        _write(table, Path(out) / "features" / f"{concept_slug(r['concept'])}.parquet")
        _write(pd.DataFrame(r["rows"]), Path(out) / "rows" / f"{concept_slug(r['concept'])}.parquet")
        ledger.append({"trial_id": r["trial_id"], "concept": r["concept"], "n_rows": len(r["rows"])})
    return ledger


def run_dose_response(
    cfg: FeatureJobConfig, model: ModelConfig, out: str | os.PathLike, dicts: Dictionaries, progress: bool = True
) -> Any:
    """Every concept of the grid not yet stored in `out`, on a Ray actor pool or in process (`cfg.runner`);
    returns `execute`'s Outcome."""
    from functools import partial

    from lab.experiments.concept_injection import model_key
    from lab.run.experiment import execute

    args = (cfg, model_key(model), dicts, str(out))
    keep = partial(store_dose_tables, str(out))
    return execute(
        dose_trials(cfg, model),
        out,
        model,
        cfg.fanout(),
        read_doses,
        prepare_reads,
        args,
        grade=keep,
        progress=progress,
        desc="concepts",
    )
