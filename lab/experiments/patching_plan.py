"""The patching grid: its config, the plan (batches with vectors, patched layers, one task per batch × layer ×
component with trial ids) and the fan-out of its cells in process or on Ray actors (lab/experiments/patching.py does a cell)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lab.config import ModelConfig
from lab.errors import LabError
from lab.run.parallel import RunnerConfig
from lab.run.tracking import TrackingConfig
from lab.steer.concepts import DEFAULT_TEMPLATE


@dataclass(frozen=True)
class PatchingConfig:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model to inject into and patch"})
    concepts: str | tuple[str, ...] = field(default="first:6", metadata={"help": "as sweep.concepts"})
    trial_numbers: tuple[int, ...] = field(default=(1,), metadata={"help": "n in 'Trial {n}', per concept"})
    layer: int = field(default=12, metadata={"help": "injection layer"})
    strength: float = field(default=0.2, metadata={"help": "injection strength, > 0, in strength_mode units"})
    strength_mode: Literal["raw", "relative"] = field(default="relative", metadata={"help": "as sweep.strength_mode"})
    patch_layers: tuple[int, ...] = field(default=(), metadata={"help": "empty = every layer after `layer`"})
    layer_stride: int = field(default=1, metadata={"help": "empty patch_layers: every stride-th layer after `layer`"})
    components: tuple[str, ...] = field(default=("attn_out", "mlp_out"), metadata={"help": "attn_out and/or mlp_out"})
    runner: RunnerConfig = field(default_factory=RunnerConfig, metadata={"help": "actors; batch_size: trials/batch"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "concept-vector prompt"})
    baseline: str = field(default="baseline_words", metadata={"help": "word list whose mean concept vectors subtract"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="patching"), metadata={"help": "MLflow; one run"}
    )
    output_dir: str = field(default="results/patching", metadata={"help": "patching/ (Parquet shards) + report/"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-vector cache; empty: <model cache>/vectors"})

    def __post_init__(self) -> None:
        from lab.experiments.patching import COMPONENTS
        from lab.steer.concepts import select_concepts

        select_concepts(self.concepts)
        if any(c not in COMPONENTS for c in self.components) or not self.components:
            raise LabError(f"components must be from {COMPONENTS}")
        if (
            self.layer_stride < 1
            or not self.trial_numbers
            or self.strength <= 0
            or min(self.patch_layers, default=99) <= self.layer
        ):
            raise LabError("layer_stride >= 1, trial_numbers non-empty, strength > 0, patch_layers after `layer`")


def plan(cfg: PatchingConfig, lm) -> tuple[list, list[int], list[tuple]]:
    """Batches (with vectors), the patched layers, and the tasks (batch index, layer, component, trial ids)."""
    import torch

    from lab.experiments.concept_injection import model_key
    from lab.experiments.patching import PATCH_VERSION, build_batch
    from lab.model.embedded import default_cache_dir
    from lab.protocol.trials import trial_id
    from lab.steer.concepts import concept_vectors, select_concepts

    lm.check_layer(cfg.layer)
    layers = list(cfg.patch_layers) or list(range(cfg.layer + 1, lm.n_layers))[:: cfg.layer_stride]
    for p in layers:
        lm.check_layer(p)
    concepts = select_concepts(cfg.concepts)
    cache = cfg.cache_dir or str(default_cache_dir() / "vectors")
    vecs, _ = concept_vectors(lm, concepts, [cfg.layer], cfg.template, cfg.baseline, cache, model_key(cfg.model))
    rows, batches, tasks, bs = [(c, n) for c in concepts for n in cfg.trial_numbers], [], [], cfg.runner.batch_size
    for i in range(0, len(rows), bs):
        part = rows[i : i + bs]
        cv = [vecs[(c, cfg.layer)] for c, _ in part]
        raw = [cfg.strength * (v.resid_norm / v.norm if cfg.strength_mode == "relative" else 1.0) for v in cv]
        b = build_batch(
            lm, f"b{i}", [c for c, _ in part], [n for _, n in part], torch.stack([v.vector for v in cv]), raw, cfg.layer
        )
        batches.append(b)
        for p in layers:
            for comp in cfg.components:
                ids = [
                    trial_id(
                        model=model_key(cfg.model),
                        concept=c,
                        trial_number=n,
                        layer=cfg.layer,
                        strength=cfg.strength,
                        strength_mode=cfg.strength_mode,
                        patch_layer=p,
                        component=comp,
                        version=PATCH_VERSION,
                    )
                    for c, n in part
                ]
                tasks.append((len(batches) - 1, p, comp, ids))
    return batches, layers, tasks


def run_cells(
    cfg: PatchingConfig,
    lm: Any,
    batches: list[Any],
    todo: list[tuple],
    out: Path,
    sites: list[str],
    fields: dict[str, Any],
) -> None:
    """Run the pending (batch, layer, component) cells in process or on `runner.num_actors` Ray actors, writing
    one Parquet shard per cell as it finishes (a crash loses at most the cells in flight)."""
    from lab.experiments.patching import PatchWorker, rows_of
    from lab.run import store

    if cfg.runner.num_actors == 0:
        w = PatchWorker(lm)
        for bi, p, comp, ids in todo:
            store.write_shard(out, rows_of(batches[bi], ids, p, comp, w.cell(batches[bi], p, comp, sites), **fields))
    elif todo:
        import ray

        from lab.run.parallel import connect

        connect(cfg.runner.address)
        cls = ray.remote(PatchWorker).options(num_cpus=cfg.runner.cpus_per_actor)
        workers = [cls.remote(cfg.model, cfg.runner.threads) for _ in range(cfg.runner.num_actors)]
        refs = {}
        for k, (bi, p, comp, ids) in enumerate(todo):  # actor k % n: each actor walks the batches in order
            refs[workers[k % len(workers)].cell.remote(batches[bi], p, comp, sites)] = (bi, p, comp, ids)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            bi, p, comp, ids = refs[ready[0]]
            store.write_shard(out, rows_of(batches[bi], ids, p, comp, ray.get(ready[0]), **fields))
