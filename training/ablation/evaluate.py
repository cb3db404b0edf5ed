"""A trained adapter → the concept-injection evaluation (PROTOCOL.md: "Each adapter is evaluated with fresh concept
vectors from the adapted model at the main layer/strength").

`evaluate_adapter(model, adapter_dir, spec, output_dir)` builds an `InjectionConfig` whose model carries the adapter,
loads the adapted model once, and calls `lab.experiments.concept_injection.run_sweep(..., lm=<adapted LoadedModel>)` in this process (no
actors: it runs inside a Tune trial or a Ray Train worker). Concept vectors are re-extracted from the adapted model:
the activation cache lives inside `output_dir`, which is emptied first, so a retrained adapter at the same path can
never pick up vectors (or stored generations) of an earlier one. Every condition gets the same `EvalSpec`, hence the
same trials (their ids differ: `lab.experiments.concept_injection.model_key` puts the adapter in them); `EvalResult.trials_hash`, a
fingerprint of the trials without the model identity, lets a report check that. Rates come from
`lab.reporting.metrics` (`summarize` overall, `rates` per layer × strength, Wilson 95 % intervals).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lab.config import ModelConfig
from lab.errors import LabError
from lab.experiments.concept_injection import InjectionConfig, JudgeConfig
from lab.protocol.trials import SweepConfig


@dataclass(frozen=True)
class EvalSpec:
    """How every adapter of an ablation is evaluated (identical for all conditions)."""

    sweep: SweepConfig = field(
        default_factory=lambda: SweepConfig(concepts="first:50", trials_per_concept=10),
        metadata={"help": "trials of every adapter; concept vectors from the adapted model"},
    )
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "grades the evaluation answers"})
    pooled_controls: int = field(
        default=0,
        metadata={
            "help": "0: one control per injection trial (paired, the lab); N: the paper's N pooled controls, control i "
            "at trial number (i mod trials_per_concept) + 1 (03f:2917-2923; the paper uses 300)"
        },
    )
    batch_size: int = field(default=16, metadata={"help": "rows per generate() call"})
    shard_size: int = field(default=64, metadata={"help": "trials per stored Parquet shard"})
    device: Literal["cpu", "cuda", "auto"] | None = field(
        default=None,
        metadata={
            "help": "how the adapted model is loaded for evaluation; empty: as model.device (auto = device_map over "
            "the evaluation worker's GPUs)"
        },
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.shard_size < 1:
            raise LabError("evaluation.batch_size and evaluation.shard_size must be >= 1")
        if self.pooled_controls < 0:
            raise LabError(f"evaluation.pooled_controls must be >= 0, got {self.pooled_controls}")


@dataclass(frozen=True)
class EvalResult:
    summary: dict[str, float]  # lab.reporting.metrics.summarize over every evaluated trial
    by_setting: Any  # pandas DataFrame: lab.reporting.metrics.rates per layer × strength
    trial_ids: list[str]
    output_dir: Path
    new: int  # generations made now
    trials_hash: str = ""  # identical for every adapter evaluated with the same EvalSpec


def trials_hash(trials: list[Any]) -> str:
    """A fingerprint of what the trials ask (concept, layer, strength, kind, trial number, prompt, …), leaving out
    the model identity (trial ids include the adapter since lab.experiments.concept_injection.model_key does), so equal hashes = same trials."""
    import json

    rows = sorted(
        json.dumps(
            {k: v for k, v in t.to_dict().items() if k not in ("trial_id", "model")}, sort_keys=True, default=str
        )
        for t in trials
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def pool_controls(trials: list[Any], n: int) -> list[Any]:
    """Every non-control trial and `n` pooled controls (n = 0: all trials as planned). Control i asks trial number
    (i mod T) + 1, T the trial numbers planned, as 03f:2920-2923 builds its 300; it is the (i // T)-th planned control
    of that trial number (controls carry no vector, so which concept labels them does not change the prompt)."""
    if n == 0:
        return list(trials)
    by_number: dict[int, list[Any]] = {}
    for t in trials:
        if t.kind == "control":
            by_number.setdefault(t.trial_number, []).append(t)
    numbers = sorted(by_number)
    if not numbers or any(len(by_number[k]) < -(-n // len(numbers)) for k in numbers):
        have = sum(len(v) for v in by_number.values())
        raise LabError(f"evaluation.pooled_controls {n}: the sweep plans {have} controls, too few to pool {n}")
    keep = {id(by_number[numbers[i % len(numbers)]][i // len(numbers)]) for i in range(n)}
    return [t for t in trials if t.kind != "control" or id(t) in keep]


def injection_config(
    model: ModelConfig, adapter_dir: str | Path | None, spec: EvalSpec, output_dir: str | Path, threads: int = 0
) -> InjectionConfig:
    """The concept-injection config of one adapter: in-process runner, tracking off (the caller logs)."""
    from lab.run.parallel import FanOutConfig
    from lab.run.tracking import TrackingConfig

    out = Path(output_dir).resolve()
    m = dataclasses.replace(
        model, adapter=str(Path(adapter_dir).resolve()) if adapter_dir else None, device=spec.device or model.device
    )
    runner = FanOutConfig(
        num_actors=0, cpus_per_actor=0, threads=threads, batch_size=spec.batch_size, shard_size=spec.shard_size
    )
    return InjectionConfig(
        model=m,
        sweep=spec.sweep,
        runner=runner,
        judge=spec.judge,
        tracking=TrackingConfig(enabled=False),
        output_dir=str(out / "trials"),
        cache_dir=str(out / "vectors"),
    )


def check(model: ModelConfig, spec: EvalSpec) -> list[str]:
    """Validate the evaluation against the model registry without loading anything; returns the trial ids."""
    from lab.experiments.concept_injection import plan
    from lab.judges import make_judge

    make_judge(spec.judge.name, **spec.judge.options)
    trials = plan(injection_config(model, None, spec, "/nonexistent")).trials
    return [t.trial_id for t in pool_controls(trials, spec.pooled_controls)]


def evaluate_adapter(
    model: ModelConfig,
    adapter_dir: str | Path | None,
    spec: EvalSpec,
    output_dir: str | Path,
    *,
    lm: Any = None,
    threads: int = 0,
    progress: bool = False,
) -> EvalResult:
    """Evaluate `model` + `adapter_dir` (None: the model itself) with `spec`; results under `output_dir`.

    `lm`: an already loaded, already adapted `LoadedModel` (else it is loaded here with the adapter).
    """
    from lab.experiments.concept_injection import plan, run_sweep
    from lab.model.loading import load, threads as set_threads
    from lab.reporting import report
    from lab.run import store
    from lab.run.tracking import TrackingConfig

    if adapter_dir is not None and not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise LabError(f"LoRA adapter not found: {adapter_dir} (expected adapter_config.json there)")
    out = Path(output_dir).resolve()
    shutil.rmtree(out, ignore_errors=True)  # fresh vectors and generations for this adapter
    out.mkdir(parents=True)
    inj = injection_config(model, adapter_dir, spec, out, threads)
    planned = pool_controls(plan(inj).trials, spec.pooled_controls)
    ids = [t.trial_id for t in planned]
    set_threads(threads)
    if lm is None:
        lm = load(inj.model)
    res = run_sweep(inj, progress=progress, lm=lm, trials=planned)
    df = store.read(inj.output_dir)
    df = df[df["trial_id"].isin(set(ids))]
    tracking_off = TrackingConfig(enabled=False)  # the Tune trial logs its own child run
    rep = report.report_rates(df, out, tracking_off, {}, title=f"{model.name}: adapter evaluation", quiet=True)
    return EvalResult(rep.overall, rep.table, ids, out, int(res["new"]), trials_hash(planned))


def setting_metrics(table: Any, names: tuple[str, ...] = ("tpr", "fpr", "introspection")) -> dict[str, float]:
    """`L12_s0.2/tpr`-style metrics from a per-setting table (what the child runs log next to the overall rates)."""
    from lab.reporting.report import table_metrics

    return {k: v for k, v in table_metrics(table).items() if k.split("/", 1)[1] in names}


def eval_payload(ev: EvalResult) -> dict[str, Any]:
    """What a trial reports of an evaluation (JSON-able: it crosses from a Ray Train worker as a file)."""
    return {"summary": dict(ev.summary), "settings": setting_metrics(ev.by_setting), "trials_hash": ev.trials_hash}
