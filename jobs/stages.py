"""Training stages: `python -m jobs.stages --config configs/stages-demo.yaml`.

Evaluates a list of checkpoints (registry name, local HF dir or hub id, optionally with a LoRA adapter) with the same
trials: concept vectors are re-extracted from each checkpoint (the activation cache is keyed by model + adapter), each
stage has its own Parquet dataset under <output_dir>/<stage> (trial ids do not include the adapter), and one pool
of Ray actors per stage. Draws TPR vs FPR per stage with 95 % intervals; MLflow: one parent run, one child per stage
with the same metric names.

A stage whose `model.adapter` does not exist fails up front, unless `create_adapter: true`: then an *untrained*
random LoRA (non-zero B, ‖ΔW‖/‖W‖ = `adapter_delta_rel` per layer; the paper's random-LoRA control) is written there
first — with `training.trainer.train("random_lora", …)` when the trainer is importable, else with PEFT directly.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.cli import entry, load_config, parser
from lab.config import ModelConfig
from lab.errors import LabError
from lab.parallel import RunnerConfig
from lab.sweep import InjectionConfig, JudgeConfig
from lab.tracking import TrackingConfig
from lab.trials import SweepConfig


@dataclass(frozen=True)
class StageConfig:
    """One checkpoint to evaluate."""

    name: str = field(metadata={"help": "label (plots, MLflow run name, sub-directory of output_dir)"})
    model: ModelConfig = field(default_factory=ModelConfig)
    dialogue_format: str | None = field(default=None, metadata={
        "help": "override sweep.dialogue_format for this stage (e.g. 'plain' for a base model without a template)"})
    create_adapter: bool = field(default=False, metadata={
        "help": "model.adapter missing: write an untrained random LoRA there (a control, not a trained stage)"})
    adapter_rank: int = field(default=8, metadata={"help": "rank of a created random LoRA"})
    adapter_delta_rel: float = field(default=0.02, metadata={"help": "‖ΔW‖_F/‖W‖_F per layer of a created LoRA"})
    adapter_seed: int = 0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", self.name):
            raise LabError(f"stage name '{self.name}' must be letters, digits, '_', '.', '+', '-' (a directory name)")
        if self.dialogue_format is not None:
            from lab.prompts import dialogue_format

            dialogue_format(self.dialogue_format)
        if self.adapter_rank < 1 or not self.adapter_delta_rel > 0:
            raise LabError("adapter_rank must be >= 1 and adapter_delta_rel > 0")


@dataclass(frozen=True)
class StagesConfig:
    """The stage comparison (configs/stages-demo.yaml, configs/stages-olmo-3.1-32b.yaml)."""

    stages: tuple[StageConfig, ...] = ()
    sweep: SweepConfig = field(default_factory=SweepConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="training-stages"))
    output_dir: str = field(default="results/stages", metadata={"help": "one Parquet dataset per stage below it"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-activation cache (see InjectionConfig)"})

    def __post_init__(self) -> None:
        if not self.stages:
            raise LabError("stages must list at least one checkpoint")
        names = [s.name for s in self.stages]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise LabError(f"duplicate stage name '{dup}'")

    def injection(self, stage: StageConfig) -> InjectionConfig:
        model = stage.model
        if model.adapter:
            model = dataclasses.replace(model, adapter=str(Path(model.adapter).resolve()))
        sweep = self.sweep
        if stage.dialogue_format:
            sweep = dataclasses.replace(sweep, dialogue_format=stage.dialogue_format)
        return InjectionConfig(model=model, sweep=sweep, runner=self.runner, judge=self.judge,
                               tracking=self.tracking, output_dir=str(Path(self.output_dir) / stage.name),
                               cache_dir=self.cache_dir)


def check_stage(cfg: StagesConfig, stage: StageConfig) -> Any:
    """Validate one stage before anything runs: plan, adapter presence, dialogue format vs chat template."""
    from lab.models import spec_for
    from lab.prompts import dialogue_format
    from lab.sweep import plan

    inj = cfg.injection(stage)
    p = plan(inj)
    ad = stage.model.adapter
    if ad and not (Path(ad) / "adapter_config.json").is_file() and not stage.create_adapter:
        raise LabError(f"stage '{stage.name}': LoRA adapter not found: {ad} (train one, or set create_adapter: true "
                       "for an untrained random-LoRA control)")
    spec = spec_for(stage.model.name)
    fmt = dialogue_format(inj.sweep.dialogue_format)
    if spec is not None and fmt.kind == "chat" and not spec.chat_template:
        raise LabError(f"stage '{stage.name}': {stage.model.name} has no chat template, so format '{fmt.name}' "
                       "cannot apply; set the stage's dialogue_format (e.g. plain)")
    return p


def create_random_adapter(stage: StageConfig) -> str:
    """Write an untrained random LoRA (non-zero) at `stage.model.adapter`; returns how it was made (one line)."""
    out = Path(stage.model.adapter or "")
    base = dataclasses.replace(stage.model, adapter=None)
    try:
        from training.conditions import LoraSettings
        from training.data import to_conversational
        from training.synthetic import generate_pairs
        from training.trainer import train
    except ImportError:
        train = None
    if train is not None:
        import dataclasses as dc

        from training.conditions import get_condition

        cond = dc.replace(get_condition("random_lora"), random_delta_rel=stage.adapter_delta_rel)
        rows = [to_conversational(r) for r in generate_pairs(2, seed=stage.adapter_seed)]  # unused by random_lora
        from lab.models import load

        lm = load(base)
        train(cond, rows, output_dir=out, model=lm, seed=stage.adapter_seed,
              lora=LoraSettings(r=stage.adapter_rank, alpha=2 * stage.adapter_rank), overwrite=False)
        how = "training.trainer.train('random_lora')"
    else:  # PEFT directly: random A and B (init_lora_weights=False), rescaled to the same relative size
        import torch
        from peft import LoraConfig, get_peft_model
        from peft.tuners.lora import LoraLayer

        from lab.models import load

        lm = load(base)
        torch.manual_seed(stage.adapter_seed)
        pm = get_peft_model(lm.model, LoraConfig(r=stage.adapter_rank, lora_alpha=2 * stage.adapter_rank,
                                                 target_modules="all-linear", init_lora_weights=False,
                                                 task_type="CAUSAL_LM"))
        with torch.no_grad():
            for mod in pm.modules():
                if isinstance(mod, LoraLayer) and "default" in mod.lora_A:
                    a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
                    delta = mod.scaling["default"] * (b @ a)
                    b.mul_(stage.adapter_delta_rel * mod.get_base_layer().weight.norm() / delta.norm().clamp(min=1e-12))
        pm.save_pretrained(str(out))
        how = "peft (init_lora_weights=False, rescaled)"
    return (f"created an UNTRAINED random LoRA adapter for stage '{stage.name}' at {out.resolve()} via {how} "
            f"(r={stage.adapter_rank}, ‖ΔW‖/‖W‖={stage.adapter_delta_rel:g} per layer, seed {stage.adapter_seed})")


@entry
def main(argv: list[str] | None = None) -> int:
    """Evaluate every stage of --config with the same trials; exit 0 on success, 2 on bad input."""
    import time

    import ray

    from lab import parallel
    from lab.grid import preflight
    from lab.sweep import run_sweep

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(StagesConfig, args)
    for s in cfg.stages:
        check_stage(cfg, s)
    preflight(cfg.tracking, cfg.runner.address)
    for s in cfg.stages:
        if s.model.adapter and not (Path(s.model.adapter) / "adapter_config.json").is_file():
            print(create_random_adapter(s))
    # plan after the adapters exist: trial ids carry the adapter's fingerprint (lab.sweep.model_key)
    plans = {s.name: check_stage(cfg, s) for s in cfg.stages}
    from lab import store

    pending = any(store.pending([t.trial_id for t in plans[s.name].trials], cfg.injection(s).output_dir)
                  for s in cfg.stages)
    started_ray = pending and not ray.is_initialized()
    if pending:  # one Ray for every stage (run_sweep then leaves it up); each stage still gets its own pool
        parallel.connect(cfg.runner.address, num_cpus=max(cfg.runner.cpus_per_actor * cfg.runner.num_actors, 1))
    ids: dict[str, list[str]] = {}
    try:
        for s in cfg.stages:
            t0 = time.time()
            res = run_sweep(cfg.injection(s), progress=not args.quiet)
            ids[s.name] = [t.trial_id for t in plans[s.name].trials]
            adapter = f" + adapter {s.model.adapter}" if s.model.adapter else ""
            print(f"stage {s.name} ({s.model.name}{adapter}): {res['total']} trials ({res['new']} generated now, "
                  f"{res['skipped']} already stored) judge: {res['judge']} [{time.time() - t0:.0f} s]")
    finally:
        if started_ray:
            ray.shutdown()
    report_and_log(cfg, ids)
    return 0


def stage_tables(cfg: StagesConfig, ids: dict[str, list[str]]) -> tuple[Any, Any]:
    """(one row per stage, one row per stage × layer × strength), each with the `summarize` rates."""
    import pandas as pd

    from lab import metrics, store

    overall, by_setting = [], []
    for s in cfg.stages:
        inj = cfg.injection(s)
        df = store.read(inj.output_dir)
        df = df[df["trial_id"].isin(set(ids[s.name]))]
        head = {"stage": s.name, "model": s.model.name, "adapter": inj.model.adapter or ""}
        overall.append(head | metrics.summarize(df))
        tab = metrics.rates(df, by=("layer", "strength"))
        for _, r in tab.iterrows():
            by_setting.append(head | r.to_dict())
    return pd.DataFrame(overall), pd.DataFrame(by_setting)


def report_and_log(cfg: StagesConfig, ids: dict[str, list[str]]) -> Any:
    from lab import plots, plots_grid, tracking
    from lab.grid import child_metrics, ci, metric_names
    from lab.config import flatten, to_dict

    table, by_setting = stage_tables(cfg, ids)
    rep = Path(cfg.output_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    paths = [rep / "stages.csv", rep / "stages_by_setting.csv", rep / "tpr_vs_fpr.png", rep / "rates.png"]
    table.to_csv(paths[0], index=False)
    by_setting.to_csv(paths[1], index=False)
    settings = ", ".join(f"L{int(r['layer'])}/s{r['strength']:g}"
                         for _, r in by_setting.drop_duplicates(["layer", "strength"]).iterrows())
    plots_grid.tpr_vs_fpr(table, "stage", paths[2], title=f"TPR vs FPR per stage ({settings})")
    names = metric_names(cfg.sweep.controls, cfg.sweep.forced_identification)
    plots.rate_bars(table, "stage", paths[3], metrics=names[:4], title="rates per stage")
    parent_id = None
    if cfg.tracking.enabled:
        with tracking.run(cfg.tracking, flatten(to_dict(cfg)), tags={"job": "stages"},
                          run_name=cfg.tracking.run_name or "stages") as parent:
            parent_id = parent.info.run_id
            for s, (_, r) in zip(cfg.stages, table.iterrows()):
                inj = cfg.injection(s)
                per_setting = {}
                for _, q in by_setting[by_setting["stage"] == s.name].iterrows():
                    cell = f"L{int(q['layer'])}_s{q['strength']:g}"
                    per_setting |= {f"{cell}/{k}": q[k] for k in ("tpr", "fpr", "introspection")}
                with tracking.run(cfg.tracking, flatten(to_dict(inj)), run_name=s.name, parent_run_id=parent_id,
                                  tags={"job": "stages", "stage": s.name, "model": s.model.name,
                                        "adapter": inj.model.adapter or ""}):
                    tracking.log_metrics(child_metrics(r.to_dict(), cfg.sweep.controls, cfg.sweep.forced_identification)
                                         | per_setting)
            tracking.log_artifacts(*paths)
    cols = names[:4]
    w = max(16, *(len(s.name) + 1 for s in cfg.stages))
    print(f"{'stage':<{w}} " + "  ".join(f"{c:<24}" for c in cols))
    for _, r in table.iterrows():
        print(f"{r['stage']:<{w}} " + "  ".join(f"{ci(r, c):<24}" for c in cols))
    print(f"report:  {paths[0].resolve()}  {paths[2].resolve()}")
    if parent_id:
        print(f"mlflow:  parent run {parent_id} ({len(table)} child runs) in experiment '{cfg.tracking.experiment}' "
              f"at {tracking.resolve_uri(cfg.tracking)}")
    return table


if __name__ == "__main__":
    raise SystemExit(main())
