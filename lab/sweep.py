"""A concept-injection sweep end to end: config → trials → Ray actors → judge → Parquet (resumable).

Every experiment that generates (robustness, stages, adapters after training) calls `run_sweep` with its own config.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.concepts import select_concepts
from lab.config import ModelConfig
from lab.errors import LabError
from lab.judges import Answer, make_judge
from lab.models import spec_for
from lab.parallel import RunnerConfig
from lab.tracking import TrackingConfig
from lab.trials import SweepConfig, Trial, expand, resolve


@dataclass(frozen=True)
class JudgeConfig:
    name: str = field(default="rules", metadata={"help": "registry name (lab.judges)"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "keyword options of the judge"})


@dataclass(frozen=True)
class InjectionConfig:
    """The concept-injection job (configs/demo.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str = field(default="results/concept-injection", metadata={"help": "Parquet dataset directory"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "concept-activation cache; empty: $INTROSPECTION_LAB_CACHE/vectors or ~/.cache/introspection-lab"})


@dataclass(frozen=True)
class Plan:
    trials: list[Trial]
    layers: tuple[int, ...]
    strengths: tuple[float, ...]
    mode: str


def plan(cfg: InjectionConfig) -> Plan:
    """Validate against the model's registry entry (no model load) and expand the trials."""
    spec = spec_for(cfg.model.name)
    if spec is None and not Path(cfg.model.name).is_dir() and "/" not in cfg.model.name:
        from lab.models import REGISTRY

        raise LabError(f"unknown model '{cfg.model.name}' (registry: {', '.join(sorted(REGISTRY))}; "
                       "or a local HF directory)")
    layers, strengths, mode = resolve(cfg.sweep, spec.default_layers if spec else (),
                                      spec.default_strengths if spec else (), spec.strength_mode if spec else "raw")
    if spec is not None:
        for layer in layers:
            if not 0 <= layer < spec.n_layers:
                raise LabError(f"layer {layer} is out of range for {spec.name} (0..{spec.n_layers - 1})")
    if mode == "relative" and any(s > 2 for s in strengths):
        raise LabError(f"relative strengths are ‖s·v‖/‖resid‖ and must be <= 2, got {max(strengths)}")
    return Plan(expand(cfg.sweep, model_key(cfg.model), layers, strengths, mode), layers, strengths, mode)


def vector_cache_dir(cfg: InjectionConfig) -> str:
    from lab.embedded import default_cache_dir

    return str(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir() / "vectors")


def model_key(model: ModelConfig) -> str:
    """The model's identity in trial ids and the vector cache: name, plus the adapter's path and a fingerprint of
    its weights file (size, mtime), so a retrained adapter at the same path gets fresh vectors and trials."""
    if not model.adapter:
        return model.name
    path = Path(model.adapter).resolve()
    weights = path / "adapter_model.safetensors"
    stat = weights.stat() if weights.is_file() else None
    tag = f"{path}|{stat.st_size}|{stat.st_mtime_ns}" if stat else str(path)
    return f"{model.name}+{path.name}@{hashlib.sha256(tag.encode()).hexdigest()[:10]}"


def run_sweep(cfg: InjectionConfig, progress: bool = True, lm: Any = None,
              trials: Sequence[Trial] | None = None) -> dict[str, Any]:
    """Generate and judge every trial not yet stored in `cfg.output_dir`. Returns counts and the plan.

    Runs on a pool of Ray actors, or in this process when `runner.num_actors` is 0 or an already loaded model
    (`lm`, e.g. an adapter just trained inside a Tune trial) is given. `trials` replaces the config's own trial set
    (e.g. a robustness grid: many variants × formats on one pool); `cfg` still gives model, runner and judge.
    """
    from tqdm.auto import tqdm

    from lab import store

    p = plan(cfg)
    if trials is not None:
        p = Plan(list(trials), tuple(sorted({t.layer for t in trials})), p.strengths, p.mode)
    judge = make_judge(cfg.judge.name, **cfg.judge.options)
    out = Path(cfg.output_dir)
    store.clean_partial(out)
    todo = set(store.pending([t.trial_id for t in p.trials], out))
    pending = [t for t in p.trials if t.trial_id in todo]
    result = {"plan": p, "total": len(p.trials), "skipped": len(p.trials) - len(pending), "new": 0,
              "output_dir": str(out), "judge": f"{judge.name}@{judge.version}"}
    if not pending:
        return result
    spec = spec_for(cfg.model.name)
    if lm is None and spec is not None and spec.source == "embedded":
        from lab.embedded import ensure_converted

        ensure_converted(cfg.model.cache_dir)  # once, in the driver: a missing package fails here, in one line
    shards = [pending[i:i + cfg.runner.shard_size] for i in range(0, len(pending), cfg.runner.shard_size)]
    bar = tqdm(total=len(pending), desc="trials", unit="trial", disable=not progress)

    def on_shard(shard: list[Trial], rows: list[dict[str, Any]]) -> None:
        store.write_shard(out, grade(judge, rows))
        result["new"] += len(rows)
        bar.update(len(rows))

    timing: dict[str, float] = {}
    try:
        if lm is not None or cfg.runner.num_actors == 0:
            _in_process(cfg, p, shards, on_shard, lm, timing)
        else:
            _on_ray(cfg, p, shards, on_shard, timing)
    finally:
        bar.close()
    result["generate_s"] = timing.get("end", 0.0) - timing.get("start", 0.0)  # shards only: no start-up, vectors
    return result


def _vector_args(cfg: InjectionConfig, p: Plan) -> tuple[Any, ...]:
    return (select_concepts(cfg.sweep.concepts), p.layers, cfg.sweep.template, cfg.sweep.baseline,
            vector_cache_dir(cfg), model_key(cfg.model))


def _check_layers(p: Plan, n_layers: int, name: str) -> None:
    for layer in p.layers:
        if not 0 <= layer < n_layers:
            raise LabError(f"layer {layer} is out of range for {name} (0..{n_layers - 1})")


def _in_process(cfg: InjectionConfig, p: Plan, shards: list[list[Trial]], on_shard: Any, lm: Any,
                timing: dict[str, float]) -> None:
    from lab.parallel import ModelWorker
    from lab.runner import VectorBank

    worker = ModelWorker.wrap(lm, cfg.runner.batch_size) if lm is not None else \
        ModelWorker(cfg.model, cfg.runner.threads, cfg.runner.batch_size)
    _check_layers(p, worker.n_layers(), cfg.model.name)
    bank = VectorBank(*worker.vectors(*_vector_args(cfg, p)))
    timing["start"] = time.perf_counter()
    for shard in shards:
        on_shard(shard, worker.run(shard, bank))
    timing["end"] = time.perf_counter()


def _on_ray(cfg: InjectionConfig, p: Plan, shards: list[list[Trial]], on_shard: Any,
            timing: dict[str, float]) -> None:
    import ray

    from lab import parallel
    from lab.runner import VectorBank

    started_ray = not ray.is_initialized()
    parallel.connect(cfg.runner.address, num_cpus=max(cfg.runner.cpus_per_actor * cfg.runner.num_actors, 1))
    workers = parallel.pool(cfg.model, cfg.runner)
    try:
        _check_layers(p, parallel.get(workers[0].n_layers.remote()), cfg.model.name)
        bank_ref = ray.put(VectorBank(*parallel.get(workers[0].vectors.remote(*_vector_args(cfg, p)))))
        timing["start"] = time.perf_counter()
        parallel.run_shards(workers, shards, bank_ref, on_shard)
        timing["end"] = time.perf_counter()
    finally:
        parallel.shutdown_pool(workers)
        if started_ray:
            ray.shutdown()


def grade(judge: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attach a judge's verdict fields to generated rows."""
    from lab.prompts import prefill_text

    answers = [Answer(r["concept"], r["response"], bool(r["forced"]), prefill_text() if r["forced"] else "")
               for r in rows]
    verdicts = judge.grade(answers)
    return [r | {"detected": v.detected, "identified": v.identified, "coherent": v.coherent, "reason": v.reason,
                 "judge": v.judge, "judge_version": v.judge_version, "parse_error": v.parse_error}
            for r, v in zip(rows, verdicts)]
