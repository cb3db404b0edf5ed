"""A concept-injection sweep end to end: config → trials → Ray actors → judge → Parquet (resumable).

Every experiment that generates (robustness, stages, adapters after training) calls `run_sweep` with its own config.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.config import ModelConfig
from lab.errors import LabError
from lab.judges import make_judge
from lab.model.loading import spec_for
from lab.protocol.trials import SweepConfig, Trial, expand, resolve
from lab.protocol.words import select_concepts
from lab.run.parallel import FanOutConfig
from lab.run.tracking import TrackingConfig

if TYPE_CHECKING:
    from lab.model.loading import LoadedModel


@dataclass(frozen=True)
class JudgeConfig:
    name: str = field(default="rules", metadata={"help": "registry name (lab.judges)"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "keyword options of the judge"})
    calibration: str | None = field(
        default=None,
        metadata={
            "help": "hand-labelled answers (CSV concept,response,detected,identified, e.g. lab/data/judge_labels.csv): "
            "report judge-corrected rates beside the raw ones (lab.reporting.calibration); empty = off"
        },
    )

    def __post_init__(self) -> None:
        from lab.judges import check_judge_options

        check_judge_options(self.name, self.options)  # a typo in an option name is one line, before any work
        if self.calibration and not Path(self.calibration).is_file():
            raise LabError(f"judge.calibration: labels file not found: {self.calibration}")


@dataclass(frozen=True)
class InjectionConfig:
    """The concept-injection job (configs/demo.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model that is injected and answers"})
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "which trials (and controls) to run"})
    runner: FanOutConfig = field(default_factory=FanOutConfig, metadata={"help": "Ray actors, threads, batching"})
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "grades each answer"})
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata={"help": "MLflow run of the sweep"})
    output_dir: str = field(default="results/concept-injection", metadata={"help": "Parquet dataset directory"})
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "concept-activation cache; empty: ($INTROSPECTION_LAB_CACHE or ~/.cache/introspection-lab)/vectors"
        },
    )


def injection_of(cfg: InjectionConfig, **changes: Any) -> InjectionConfig:
    """The plain sweep config inside a job config that extends `InjectionConfig`, with `changes` applied."""
    return InjectionConfig(**{f.name: getattr(cfg, f.name) for f in fields(InjectionConfig)} | changes)


@dataclass(frozen=True)
class Plan:
    trials: list[Trial]
    layers: tuple[int, ...]
    strengths: tuple[float, ...]
    mode: str


def plan(cfg: InjectionConfig, edits_tag: str = "") -> Plan:
    """Validate against the model's registry entry (no model load) and expand the trials."""
    spec = spec_for(cfg.model.name)
    if spec is None and not Path(cfg.model.name).is_dir() and "/" not in cfg.model.name:
        from lab.model.loading import REGISTRY

        raise LabError(
            f"unknown model '{cfg.model.name}' (registry: {', '.join(sorted(REGISTRY))}; or a local HF directory)"
        )
    layers, strengths, mode = resolve(
        cfg.sweep,
        spec.default_layers if spec else (),
        spec.default_strengths if spec else (),
        spec.strength_mode if spec else "raw",
    )
    if spec is not None:
        for layer in layers:
            if not 0 <= layer < spec.n_layers:
                raise LabError(f"layer {layer} is out of range for {spec.name} (0..{spec.n_layers - 1})")
    if mode == "relative" and any(s > 2 for s in strengths):
        raise LabError(f"relative strengths are ‖s·v‖/‖resid‖ and must be <= 2, got {max(strengths)}")
    key = model_key(cfg.model) + (f"+edits@{edits_tag}" if edits_tag else "")
    return Plan(expand(cfg.sweep, key, layers, strengths, mode), layers, strengths, mode)


def vector_cache_dir(cfg: InjectionConfig) -> str:
    from lab.model.embedded import default_cache_dir

    return str(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir() / "vectors")


def model_key(model: ModelConfig) -> str:
    """The model's identity in trial ids and the vector cache: name, dtype when not float32, plus the adapter's path
    and a fingerprint of its weights file (size, mtime), so a retrained adapter at the same path gets fresh vectors
    and trials."""
    key = model.name if model.dtype == "float32" else f"{model.name}@{model.dtype}"
    if not model.adapter:
        return key
    path = Path(model.adapter).resolve()
    weights = path / "adapter_model.safetensors"
    stat = weights.stat() if weights.is_file() else None
    tag = f"{path}|{stat.st_size}|{stat.st_mtime_ns}" if stat else str(path)
    return f"{key}+{path.name}@{hashlib.sha256(tag.encode()).hexdigest()[:10]}"


def edits_fingerprint(edits: Sequence[Any]) -> str:
    """A short hash of a list of interventions (operator, site, every tensor and number), for trial ids."""
    import torch

    h = hashlib.sha256()
    for op in edits:
        h.update(f"{type(op).__name__}|{op.site}".encode())
        for name in sorted(vars(op)):
            v = getattr(op, name)
            if isinstance(v, torch.Tensor):
                h.update(name.encode() + v.detach().float().cpu().contiguous().numpy().tobytes())
            elif isinstance(v, (int, float, str, tuple, list)) or v is None:
                h.update(f"{name}={v!r}".encode())
            elif hasattr(v, "w_enc"):  # a feature dictionary
                h.update(name.encode() + v.w_enc.detach().float().cpu().numpy().tobytes()[: 1 << 20])
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class SweepContext:
    """What every shard of a sweep needs, built once on the first replica and shared through the object store."""

    bank: Any  # lab.generate.runner.VectorBank
    batch_size: int
    edits: tuple[Any, ...] = ()


def prepare(
    lm: LoadedModel,
    concepts: Sequence[str],
    layers: Sequence[int],
    template: str,
    baseline: str,
    cache_dir: str | None,
    key: str,
    batch_size: int,
    edits: tuple[Any, ...],
    extra: dict[Any, Any] | None,
    probes: tuple[Trial, ...] = (),
) -> SweepContext:
    """Check layers against the loaded model and compute the concept vectors (from the unedited model); with
    `probes`, run the steering self-test (lab.experiments.selftest) on them."""
    from lab.generate.runner import VectorBank
    from lab.steer.concepts import concept_vectors

    for layer in layers:
        lm.check_layer(layer)
    vectors, typical = concept_vectors(lm, concepts, layers, template, baseline, cache_dir, key)
    ctx = SweepContext(VectorBank({**vectors, **(extra or {})}, typical), batch_size, tuple(edits))
    if probes:
        from lab.experiments.selftest import check_steering

        check_steering(lm, ctx.bank, probes, ctx.edits)
    return ctx


def generate(lm: LoadedModel, shard: list[Trial], ctx: SweepContext) -> list[dict[str, Any]]:
    from lab.generate.runner import Runner
    from lab.run.progress import advance

    return Runner(lm, ctx.bank, ctx.batch_size, ctx.edits).run(shard, on_batch=advance)  # trials counted per batch


def run_sweep(
    cfg: InjectionConfig,
    progress: bool = True,
    lm: LoadedModel | None = None,
    trials: Sequence[Trial] | None = None,
    edits: Sequence[Any] = (),
    edits_tag: str = "",
    extra_vectors: dict[tuple[str, int], Any] | None = None,
) -> dict[str, Any]:
    """Generate and judge every trial not yet stored in `cfg.output_dir`. Returns counts and the plan.

    Runs on a pool of Ray actors, or in this process when `runner.num_actors` is 0 or an already loaded model
    (`lm`, e.g. an adapter just trained inside a Tune trial) is given. `trials` replaces the config's own trial set
    (e.g. a robustness grid); `edits` are interventions applied to every trial's forward passes (an ablated
    direction, a trained bias), identified in trial ids by `edits_tag` or their fingerprint; `extra_vectors` adds
    named vectors that trials select with `Trial.vector`.
    """
    from functools import partial

    from lab.run.experiment import execute

    tag = (edits_tag or edits_fingerprint(edits)) if edits else ""
    p = plan(cfg, tag)
    if trials is not None:
        p = Plan(list(trials), tuple(sorted({t.layer for t in trials})), p.strengths, p.mode)
    judge = make_judge(cfg.judge.name, **cfg.judge.options)
    from lab.experiments import selftest

    if cfg.sweep.selftest:
        selftest.check_judge(judge)  # a broken judge stops the sweep here, before any model is loaded
    spec = spec_for(cfg.model.name)
    if lm is None and spec is not None and spec.source == "embedded":
        from lab.model.embedded import ensure_converted

        # once, in the driver: a missing package fails here, in one line
        ensure_converted(cfg.model.cache_dir, cfg.model.name)
    extra = dict(extra_vectors or {})
    concepts = list(
        dict.fromkeys(
            [
                *select_concepts(cfg.sweep.concepts),
                *(t.concept for t in p.trials if (t.vector or t.concept, t.layer) not in extra),
            ]
        )
    )
    # ZeRO-3 ranks must run the same forwards: no on-disk cache that one rank could hit and another miss
    cache = vector_cache_dir(cfg) if cfg.model.shard == "none" else None
    args = (
        concepts,
        p.layers,
        cfg.sweep.template,
        cfg.sweep.baseline,
        cache,
        model_key(cfg.model),
        cfg.runner.batch_size,
        tuple(edits),
        extra,
        selftest.probes(p.trials) if cfg.sweep.selftest else (),
    )
    out = execute(
        p.trials,
        cfg.output_dir,
        cfg.model,
        cfg.runner,
        generate,
        prepare,
        args,
        grade=partial(grade, judge),
        lm=lm,
        progress=progress,
    )
    return {
        "plan": p,
        "total": out.total,
        "skipped": out.skipped,
        "new": out.new,
        "output_dir": out.output_dir,
        "judge": f"{judge.name}@{judge.version}",
        "generate_s": out.work_s,
    }


def judged_sweep(cfg: InjectionConfig, quiet: bool = False) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
    """`run_sweep` as a job runs it: the judge's calibration first (a chance-level judge stops there), the counts
    printed, then (result, this plan's stored trials, calibration)."""
    from lab.reporting import calibration
    from lab.run import store

    cal = calibration.for_judge(cfg.judge)
    if cal:
        print(f"judge calibration ({cfg.judge.calibration}): {calibration.describe_calibration(cal)}")
    res = run_sweep(cfg, progress=not quiet)
    print(f"trials: {res['total']} ({res['new']} generated now, {res['skipped']} already stored) judge: {res['judge']}")
    df = store.read(cfg.output_dir)
    return res, df[df["trial_id"].isin({t.trial_id for t in res["plan"].trials})], cal


def grade(judge: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attach a judge's verdict fields to generated rows (the judge sees the variant's own question)."""
    from lab.judges import answer_for

    verdicts = judge.grade([answer_for(r) for r in rows])
    return [
        r
        | {
            "detected": v.detected,
            "identified": v.identified,
            "coherent": v.coherent,
            "reason": v.reason,
            "judge": v.judge,
            "judge_version": v.judge_version,
            "parse_error": v.parse_error,
        }
        for r, v in zip(rows, verdicts)
    ]
