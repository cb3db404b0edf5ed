"""Inputs of the transcoder-feature regression (jobs/feature_regression.py):

- `sweep_rates`: per-concept detection rates at the injection layer from a stored sweep, run first when asked
  (`lab.experiments.concept_injection.run_sweep`, graded by the sweep's judge);
- `read_codes` + `write_tables`: per concept, the dictionary codes under injection averaged over its trial numbers
  (`lab.experiments.features.concept_codes`) through the one fan-out (`lab.run.experiment.execute`: one trial per
  concept, its id hashing model, reads and dictionaries; shards under the folder given), then the stored tables
  under <output_dir>/regression that `python -m analysis.regression --run` refits without a model: features
  (+ detection_rate), feature_meta, vectors (the projection baseline's input), spec.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.config import ModelConfig
from lab.errors import LabError
from lab.experiments.dose_response import Dictionaries
from lab.experiments.features import ConceptTrial
from lab.protocol.trials import trial_id
from lab.run.parallel import FanOutConfig
from lab.steer.injection import Strength


def sweep_rates(sweep: Any, layer: int, concepts: Sequence[str], folds: int, run: bool) -> dict[str, float]:
    """Detection rate per concept at `layer` from the sweep stored in `sweep.output_dir` (an `InjectionConfig`),
    run there first when `run`; at least `folds` concepts must have one, and the rates must vary."""
    from lab.experiments.concept_injection import run_sweep
    from lab.experiments.features import detection_by_concept
    from lab.run import store

    if run:
        run_sweep(sweep, progress=False)
    if len(rates := detection_by_concept(store.read(sweep.output_dir), layer, concepts)) < folds:
        raise LabError(f"{sweep.output_dir} has rates for {len(rates)} of the concepts; need >= folds ({folds})")
    if len(set(rates.values())) == 1:  # a constant target: no R², and no success/failure split for the baseline
        raise LabError(
            f"every concept's detection rate at layer {layer} in {sweep.output_dir} is {next(iter(rates.values())):.2f}: "
            "nothing to regress (a model that never claims detection, e.g. a base model, gives this); give sweep_dir, "
            "a stored sweep at this layer where the rates vary"
        )
    return rates


@dataclass(frozen=True)
class ConceptReads:
    """What to read per concept: `strength` × its vector at resid_post.<layer>, dictionaries at `read_layers`, over
    the trial prompts of `trial_numbers` in `dialogue_format` (the sweep's)."""

    layer: int
    strength: Strength
    read_layers: tuple[int, ...]
    trial_numbers: tuple[int, ...]
    cache_dir: str | None = None  # concept-vector cache; None: <lab cache>/vectors
    dialogue_format: str = "standard"  # the trial prompts' format: the one the detection rates were measured in


@dataclass(frozen=True)
class _Context:
    vectors: dict[str, Any]
    dictionaries: dict[int, Any]
    prompts: list[Any]
    dla: dict[int, Any]  # per layer: decoder rows · (mean Yes − mean No unembedding)
    reads: ConceptReads


def prepare_codes(lm: Any, concepts: list[str], reads: ConceptReads, dictionaries: Dictionaries, key: str) -> _Context:
    from lab.experiments.features import logit_direction, trial_prompts
    from lab.model.embedded import default_cache_dir
    from lab.steer.concepts import concept_vectors

    cache = reads.cache_dir or str(default_cache_dir() / "vectors")
    vecs, _ = concept_vectors(lm, concepts, [reads.layer], cache_dir=cache, model_key=key)
    dicts = dictionaries(lm, reads.read_layers)
    direction = logit_direction(lm)
    dla = {L: tc.w_dec.float() @ direction for L, tc in dicts.items()}
    v = {c: x for (c, _), x in vecs.items()}
    return _Context(v, dicts, trial_prompts(lm, reads.trial_numbers, fmt=reads.dialogue_format), dla, reads)


def read_concept_codes(lm: Any, shard: list[ConceptTrial], ctx: _Context) -> list[dict[str, Any]]:
    from lab.experiments.features import concept_codes

    r = ctx.reads
    out = []
    for t in shard:
        cv = ctx.vectors[t.concept]
        raw = r.strength.raw(cv.norm, cv.resid_norm)
        codes = concept_codes(lm, cv.vector, raw, r.layer, ctx.dictionaries, ctx.prompts)
        out.append(
            {"trial_id": t.trial_id, "concept": t.concept, "vector": cv.vector.tolist()}
            | {f"codes_L{L}": c.tolist() for L, c in codes.items()}
            | {f"dla_L{L}": d.tolist() for L, d in ctx.dla.items()}
        )
    return out


def read_codes(
    model: ModelConfig,
    runner: FanOutConfig,
    concepts: Sequence[str],
    reads: ConceptReads,
    dictionaries: Dictionaries,
    dictionary_key: Mapping[str, Any],
    where: str | os.PathLike,
    lm: Any = None,
) -> list[dict[str, Any]]:
    """One row per concept (in `concepts` order): its vector, codes per read layer and the layer's dla; computed
    for the concepts not yet stored in `where`, on Ray actors or in process (`runner`; or on `lm`, a model already
    loaded here)."""
    import pyarrow.parquet as pq

    from lab.config import to_dict
    from lab.experiments.concept_injection import model_key
    from lab.run import store
    from lab.run.experiment import execute

    spec = to_dict(reads)
    if spec["dialogue_format"] == "standard":  # the default keeps the ids reads had before the field existed
        del spec["dialogue_format"]
    key = {"model": model_key(model), "reads": spec, "dictionaries": dict(dictionary_key)}
    trials = [ConceptTrial(trial_id(**key, concept=c), c) for c in concepts]
    args = (list(concepts), reads, dictionaries, model_key(model))
    execute(
        trials, where, model, runner, read_concept_codes, prepare_codes, args, lm=lm, progress=False, desc="concepts"
    )
    got = {r["trial_id"]: r for f in store.shard_files(where) for r in pq.read_table(f).to_pylist()}
    return [got[t.trial_id] for t in trials]


GEMMA_SCOPE_PATTERN = "layer_{layer}_width_262k_l0_big_affine"  # the paper's transcoders (04h: 262k wide, L0 "big")


def gemma_scope_dir(root: str | os.PathLike, layer: int, pattern: str = GEMMA_SCOPE_PATTERN) -> Path:
    """The Gemma Scope 2 folder of `layer` under `root` (`pattern` with {layer} filled); one line when missing."""
    path = Path(root) / pattern.format(layer=layer)
    if not path.exists():
        raise LabError(f"no transcoder for layer {layer}: {path} is missing (a local copy of Gemma Scope 2)")
    return path


def load_gemma_scope(
    lm: Any, layers: Sequence[int], root: str | os.PathLike, pattern: str = GEMMA_SCOPE_PATTERN
) -> dict[int, Any]:
    """A `Dictionaries` loader: each layer's Gemma Scope 2 transcoder from a local folder (no downloads)."""
    from lab.steer.transcoder import load_transcoder

    return {layer: load_transcoder(gemma_scope_dir(root, layer, pattern)) for layer in layers}


def write_tables(root: Path, rates: Mapping[str, float], rows: Sequence[Mapping[str, Any]], spec: dict) -> None:
    """features (+ detection_rate) / feature_meta / vectors / spec.json under `root` from `read_codes` rows (in
    concept order); spec's `ns` are capped at the number of features."""
    import pandas as pd
    import torch

    from lab.experiments.features import feature_table

    layers = [int(k.removeprefix("codes_L")) for k in rows[0] if k.startswith("codes_L")]
    concepts = [r["concept"] for r in rows]
    f32 = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    codes = {L: torch.stack([f32(r[f"codes_L{L}"]) for r in rows]) for L in layers}
    feats, meta = feature_table(concepts, codes, {L: f32(rows[0][f"dla_L{L}"]) for L in layers})
    root.mkdir(parents=True, exist_ok=True)
    feats.assign(detection_rate=[rates[c] for c in concepts]).to_parquet(root / "features.parquet")
    meta.to_parquet(root / "feature_meta.parquet")
    v = torch.stack([f32(r["vector"]) for r in rows]).numpy()
    vectors = pd.DataFrame(v, columns=[f"v{i}" for i in range(v.shape[1])]).assign(concept=concepts)
    vectors.to_parquet(root / "vectors.parquet")
    ns = sorted({min(n, len(meta)) if n else len(meta) for n in spec["ns"]})
    (root / "spec.json").write_text(json.dumps(spec | {"ns": ns}, indent=1))
