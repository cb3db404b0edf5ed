"""Training-stage comparison configs: each stage a checkpoint (registry name, local HF dir or hub id, optionally a
LoRA adapter) evaluated with the same trials; validated before anything runs (`check_stage`)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.config import ModelConfig
from lab.errors import LabError
from lab.experiments.concept_injection import InjectionConfig, JudgeConfig
from lab.protocol.trials import SweepConfig
from lab.run.parallel import FanOutConfig
from lab.run.tracking import TrackingConfig


@dataclass(frozen=True)
class StageConfig:
    """One checkpoint to evaluate."""

    name: str = field(metadata={"help": "label (plots, MLflow run name, sub-directory of output_dir)"})
    model: ModelConfig | None = field(
        default=None, metadata={"help": "checkpoint: name and optional adapter (default: the top-level model)"}
    )
    adapter: str | None = field(
        default=None, metadata={"help": "a LoRA adapter on the top-level model (a stage without its own model)"}
    )
    dialogue_format: str | None = field(
        default=None,
        metadata={
            "help": "override sweep.dialogue_format for this stage (e.g. 'plain' for a base model without a template)"
        },
    )
    create_adapter: bool = field(
        default=False,
        metadata={
            "help": "model.adapter missing: write an untrained random LoRA there (a control, not a trained stage)"
        },
    )
    adapter_rank: int = field(default=8, metadata={"help": "rank of a created random LoRA"})
    adapter_delta_rel: float = field(default=0.02, metadata={"help": "‖ΔW‖_F/‖W‖_F per layer of a created LoRA"})
    adapter_seed: int = field(default=0, metadata={"help": "seed of a created random LoRA"})

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", self.name):
            raise LabError(f"stage name '{self.name}' must be letters, digits, '_', '.', '+', '-' (a directory name)")
        if self.dialogue_format is not None:
            from lab.protocol.prompts import dialogue_format

            dialogue_format(self.dialogue_format)
        if self.adapter_rank < 1 or not self.adapter_delta_rel > 0:
            raise LabError("adapter_rank must be >= 1 and adapter_delta_rel > 0")


@dataclass(frozen=True)
class StagesConfig:
    """The stage comparison (configs/stages-demo.yaml, configs/stages-olmo-3.1-32b.yaml). A stage without its own
    `model` runs the top-level one (with the stage's `adapter`), so `--set model.name=…` swaps every such stage."""

    model: ModelConfig | None = field(
        default=None, metadata={"help": "the model of the stages that name none (default: the embedded model)"}
    )
    stages: tuple[StageConfig, ...] = field(default=(), metadata={"help": "checkpoints run on the same trials (>= 1)"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-activation cache (see InjectionConfig)"})
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "trials every stage runs"})
    runner: FanOutConfig = field(default_factory=FanOutConfig, metadata={"help": "Ray actors, threads, batching"})
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "grades each answer"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="training-stages"), metadata={"help": "a child run per stage"}
    )
    output_dir: str = field(default="results/stages", metadata={"help": "one Parquet dataset per stage below it"})

    def __post_init__(self) -> None:
        if not self.stages:
            raise LabError("stages must list at least one checkpoint")
        names = [s.name for s in self.stages]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise LabError(f"duplicate stage name '{dup}'")
        both = next((s.name for s in self.stages if s.model is not None and s.adapter is not None), None)
        if both:
            raise LabError(f"stage '{both}': set the adapter inside its model (model.adapter), not beside it")

    def checkpoint(self, stage: StageConfig) -> ModelConfig:
        """The model a stage runs: its own, else the top-level one with the stage's adapter."""
        if stage.model is not None:
            return stage.model
        top = self.model or ModelConfig()
        return dataclasses.replace(top, adapter=stage.adapter or top.adapter)

    def injection(self, stage: StageConfig) -> InjectionConfig:
        model = self.checkpoint(stage)
        if model.adapter:  # a created adapter's relative path lives under output_dir: a job writes only there
            base = Path(self.output_dir) if stage.create_adapter else Path()
            model = dataclasses.replace(model, adapter=str((base / model.adapter).resolve()))
        sweep = self.sweep
        if stage.dialogue_format:
            sweep = dataclasses.replace(sweep, dialogue_format=stage.dialogue_format)
        out = str(Path(self.output_dir) / stage.name)
        return InjectionConfig(model, sweep, self.runner, self.judge, self.tracking, out, self.cache_dir)


def check_stage(cfg: StagesConfig, stage: StageConfig) -> Any:
    """Validate one stage before anything runs: plan, adapter presence, dialogue format vs chat template."""
    from lab.experiments.concept_injection import plan
    from lab.model.loading import spec_for
    from lab.protocol.prompts import dialogue_format

    inj = cfg.injection(stage)
    p = plan(inj)
    ad = inj.model.adapter
    if ad and not (Path(ad) / "adapter_config.json").is_file() and not stage.create_adapter:
        raise LabError(
            f"stage '{stage.name}': LoRA adapter not found: {ad} (train one, or set create_adapter: true "
            "for an untrained random-LoRA control)"
        )
    spec = spec_for(inj.model.name)
    fmt = dialogue_format(inj.sweep.dialogue_format)
    if spec is not None and fmt.kind == "chat" and not spec.chat_template:
        raise LabError(
            f"stage '{stage.name}': {inj.model.name} has no chat template, so format '{fmt.name}' "
            "cannot apply; set the stage's dialogue_format (e.g. plain)"
        )
    return p
