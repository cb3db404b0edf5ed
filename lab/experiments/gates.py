"""The causal test of gate features, on the one fan-out (`lab.run.experiment.execute`): per concept × strength × trial
prompt, the Yes − No score with the injection alone, without it, and with each feature set (the gates, a matched
random set) ablated in the steered run or patched from it into the unsteered one (`lab.experiments.features.
gate_effects`).

A trial is one forward batch of the plan (concepts × strengths × trial numbers, in that order, `dose.batch_size`
rows each), so the batches, and with them every score, are the same however the shards fall; its id hashes the
dose-response key (`lab.experiments.dose_response.dose_key`), the feature sets and the batch's rows. Shards are
stored under <out>/causal/; `scores` gives the long table (concept, strength, trial_number, condition, yes_no) in
plan order: per batch, per condition (steered, unsteered, then ablate:<set>, patch:<set> for each set), per row.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lab.config import ModelConfig
from lab.experiments.dose_response import Dictionaries, FeatureJobConfig, FeatureReads, dose_key
from lab.protocol.trials import trial_id

FeatureSets = Mapping[str, Mapping[int, Sequence[int]]]


@dataclass(frozen=True)
class GateBatch:
    trial_id: str
    index: int  # position of the batch in the plan
    rows: tuple[tuple[str, float, int], ...]  # (concept, strength, trial number)


def gate_batches(
    cfg: FeatureJobConfig, model: ModelConfig, sets: FeatureSets, strengths: Sequence[float]
) -> list[GateBatch]:
    from lab.protocol.words import select_concepts

    d = cfg.dose
    rows = [(c, float(s), n) for c in select_concepts(d.concepts) for s in strengths for n in d.trial_numbers]
    key = dose_key(cfg, model) | {"sets": {k: {str(lay): list(f) for lay, f in v.items()} for k, v in sets.items()}}
    out = []
    for i, b in enumerate(range(0, len(rows), d.batch_size)):
        chunk = tuple(rows[b : b + d.batch_size])
        out.append(GateBatch(trial_id(**key, rows=[list(r) for r in chunk]), i, chunk))
    return out


def prepare_gate_tests(
    lm: Any, cfg: FeatureJobConfig, key: str, dictionaries: Dictionaries, sets: FeatureSets
) -> tuple[FeatureReads, FeatureSets]:
    from lab.experiments import dose_response

    return dose_response.prepare_reads(lm, cfg, key, dictionaries), sets


def score_gate_batches(lm: Any, shard: list[GateBatch], ctx: tuple[FeatureReads, FeatureSets]) -> list[dict[str, Any]]:
    import torch

    from lab.experiments.features import gate_effects
    from lab.steer.injection import Strength

    reads, sets = ctx
    d = reads.grid
    prompts = {p.trial_number: p for p in reads.prompts}
    out = []
    for t in shard:
        cvs = [reads.vectors[c] for c, _, _ in t.rows]
        raw = [Strength(s, d.strength_mode).raw(cv.norm, cv.resid_norm) for (_, s, _), cv in zip(t.rows, cvs)]
        ps = [prompts[n] for _, _, n in t.rows]
        vecs = torch.stack([cv.vector for cv in cvs])
        eff = gate_effects(
            lm, [p.ids for p in ps], [p.start for p in ps], vecs, raw, d.inject_layer, reads.dictionaries, sets
        )
        out.append(
            {
                "trial_id": t.trial_id,
                "index": t.index,
                "concept": [c for c, _, _ in t.rows],
                "strength": [s for _, s, _ in t.rows],
                "trial_number": [n for _, _, n in t.rows],
                "conditions": list(eff),
                "yes_no": [[float(x) for x in v] for v in eff.values()],
            }
        )
    return out


def gate_scores(out: str | os.PathLike, trials: Sequence[GateBatch]) -> pd.DataFrame:
    """The long table of this plan's stored batches (see the module doc)."""
    import pyarrow.parquet as pq

    from lab.run import store

    ids = {t.trial_id for t in trials}
    got = [r for f in store.shard_files(out) for r in pq.read_table(f).to_pylist() if r["trial_id"] in ids]
    recs = [
        {"concept": c, "strength": s, "trial_number": n, "condition": k, "yes_no": v[i]}
        for b in sorted({r["trial_id"]: r for r in got}.values(), key=lambda r: r["index"])
        for k, v in zip(b["conditions"], b["yes_no"])
        for i, (c, s, n) in enumerate(zip(b["concept"], b["strength"], b["trial_number"]))
    ]
    return pd.DataFrame(recs)


def run_gate_tests(
    cfg: FeatureJobConfig,
    model: ModelConfig,
    out: str | os.PathLike,
    dictionaries: Dictionaries,
    sets: FeatureSets,
    strengths: Sequence[float],
    progress: bool = True,
) -> pd.DataFrame:
    """Score every batch not yet stored in <out>/causal (on a Ray actor pool or in process, `cfg.runner`); returns
    the long table of the whole plan."""
    from lab.experiments.concept_injection import model_key
    from lab.run.experiment import execute

    trials = gate_batches(cfg, model, sets, strengths)
    where = Path(out) / "causal"
    args = (cfg, model_key(model), dictionaries, sets)
    execute(
        trials,
        where,
        model,
        cfg.fanout(),
        score_gate_batches,
        prepare_gate_tests,
        args,
        progress=progress,
        desc="causal batches",
    )
    return gate_scores(where, trials)
