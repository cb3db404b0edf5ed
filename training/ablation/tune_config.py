"""The DPO-component ablation's config (`AblationConfig`) and its search space (`TrialSpec`, one per Tune trial).

`AblationConfig` is what configs/ablations-*.yaml hold; `search_space` is Tune's grid over condition labels × seeds ×
`grid`, `expected_trials` every trial that grid must produce (a failed one is reported, never silently dropped), and
`trial_settings` the (condition, LoRA, hyper-parameters) of one trial. Nothing here imports Ray at module level.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lab.config import ModelConfig, from_dict, to_dict
from lab.errors import LabError
from lab.run.tracking import TrackingConfig, resolve_uri
from training.ablation.evaluate import EvalSpec
from training.lora.conditions import (
    CONDITIONS,
    PAPER_HPARAMS,
    PAPER_LORA,
    Condition,
    LoraSettings,
    TrainHParams,
    condition_from_dict,
    get_condition,
)


@dataclass(frozen=True)
class DataSpec:
    """Preference data: a file (JSONL / Parquet / save_to_disk dir) or the seeded synthetic generator."""

    path: str | None = field(
        default=None, metadata={"help": "preference data; empty: training.preference.synthetic pairs"}
    )
    synthetic_pairs: int = field(default=5000, metadata={"help": "pairs generated when path is empty"})
    synthetic_seed: int = field(default=0, metadata={"help": "seed of the synthetic pairs"})
    synthetic_domains: tuple[str, ...] = field(default=(), metadata={"help": "generator domains; empty: all"})
    format: Literal["auto", "conversational", "plain"] = field(
        default="conversational",
        metadata={"help": "conversational = chat messages (the chat template is applied, as in the evaluation)"},
    )
    eval_fraction: float = field(default=0.1, metadata={"help": "held-out share (eval loss); 0 = none"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/eval split"})
    layout: Literal["lab", "paper"] = field(
        default="lab",
        metadata={
            "help": (
                "paper: training.preference.paper_data recipe on a local HF-layout copy at path (prompt ≤ max_prompt_chars, answers ≤ "
                "max_answer_chars, ' ' + answer + EOS, plain text, random eval_fraction split, domains from domain_column)"
            )
        },
    )
    domain_column: str = field(default="source", metadata={"help": "layout paper: the column naming each row's domain"})
    include_domains: tuple[str, ...] = field(default=(), metadata={"help": "layout paper: keep only these domains"})
    exclude_domains: tuple[str, ...] = field(default=(), metadata={"help": "layout paper: drop these domains"})
    max_prompt_chars: int = field(default=500, metadata={"help": "layout paper: longer prompts are dropped (chars)"})
    max_answer_chars: int = field(default=1500, metadata={"help": "layout paper: longer answers are dropped (chars)"})
    long_rows: Literal["drop", "truncate"] = field(
        default="drop",
        metadata={
            "help": "layout paper: rows over the limits are dropped (the lab's default) or cut to them (truncate: the "
            "paper, 03f:517-525)"
        },
    )
    domain_map: Literal["column", "paper"] = field(
        default="column",
        metadata={
            "help": "layout paper: domains from domain_column, or the paper's prompt_id source map with its keyword "
            "fallback (8 domains incl. nlp_task, 03f:247-314)"
        },
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise LabError(f"data.eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.path is None and self.synthetic_pairs < 1:
            raise LabError("data.synthetic_pairs must be >= 1 when data.path is empty")
        if self.layout == "paper" and not self.path:
            raise LabError("data.layout 'paper' needs data.path (a local copy of the preference data set)")


@dataclass(frozen=True)
class TrialResources:
    """What one trial reserves, how many run at once, and how failures are retried."""

    cpus: float = field(default=1.0, metadata={"help": "Ray CPUs per trial (workers = 1) / of the trial driver"})
    gpus: float = field(default=0.0, metadata={"help": "Ray GPUs per trial (workers = 1)"})
    threads: int = field(default=1, metadata={"help": "torch intra-op threads per trial or worker (0 = Ray's)"})
    workers: int = field(default=1, metadata={"help": "> 1: Ray Train TorchTrainer with this many workers"})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "workers > 1: Ray CPUs per training worker"})
    gpus_per_worker: float = field(default=0.0, metadata={"help": "workers > 1: Ray GPUs per training worker"})
    resources_per_worker: dict[str, float] = field(default_factory=dict, metadata={"help": "custom Ray resources"})
    eval_cpus: float = field(default=1.0, metadata={"help": "workers > 1: CPUs of the evaluation worker"})
    eval_gpus: float = field(default=0.0, metadata={"help": "workers > 1: GPUs of the evaluation worker"})
    backend: Literal["auto", "nccl", "gloo"] = field(default="auto", metadata={"help": "auto: nccl on GPUs"})
    max_concurrent_trials: int = field(default=1, metadata={"help": "trials running at once"})
    max_failures: int = field(default=1, metadata={"help": "retries of a failed trial (tune.FailureConfig)"})
    checkpoint_steps: int = field(
        default=50,
        metadata={"help": "resumable checkpoint every N optimizer steps: a killed trial restarts from it (0 = off)"},
    )

    def __post_init__(self) -> None:
        if min(self.workers, self.max_concurrent_trials) < 1 or min(self.max_failures, self.threads) < 0:
            raise LabError("resources: workers and max_concurrent_trials must be >= 1, max_failures and threads >= 0")
        if self.checkpoint_steps < 0:
            raise LabError("resources.checkpoint_steps must be >= 0 (0 = no checkpoints)")
        if min(self.cpus, self.gpus, self.cpus_per_worker, self.gpus_per_worker, self.eval_cpus, self.eval_gpus) < 0:
            raise LabError("resources: CPU and GPU amounts must be >= 0")

    @property
    def distributed(self) -> bool:
        return self.workers > 1


@dataclass(frozen=True)
class AblationConfig:
    """The DPO-component ablation (configs/ablations-demo.yaml, configs/ablations-olmo-3.1-32b.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "base model of every adapter"})
    data: DataSpec = field(default_factory=DataSpec, metadata={"help": "preference pairs (train + eval split)"})
    conditions: tuple[dict[str, Any], ...] = field(
        default=(),
        metadata={"help": "training.lora.conditions.condition_from_dict entries: a registered name plus overrides"},
    )
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "each condition × grid point trains once per seed"})
    lora: LoraSettings = field(default=PAPER_LORA, metadata={"help": "LoRA shape of every condition"})
    hparams: TrainHParams = field(default=PAPER_HPARAMS, metadata={"help": "optimizer and schedule of every condition"})
    grid: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "extra search space: 'hparams.<field>' / 'lora.<field>' → list of values (grid search)"},
    )
    deepspeed: str | None = field(default=None, metadata={"help": "ZeRO JSON (cluster/deepspeed/zero3.json)"})
    resources: TrialResources = field(default_factory=TrialResources, metadata={"help": "trial resources and retries"})
    evaluation: EvalSpec = field(default_factory=EvalSpec, metadata={"help": "how every adapter is evaluated"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="dpo-ablation"), metadata={"help": "a child run per trial"}
    )
    output_dir: str = field(
        default="results/ablations",
        metadata={"help": "adapters, evaluations, Tune state, report (shared storage on a multi-node cluster)"},
    )
    address: str | None = field(
        default=None,
        metadata={"help": "Ray address; empty: $RAY_ADDRESS (inside `ray job submit`) or a local Ray on loopback"},
    )
    ray_cpus: float | None = field(default=None, metadata={"help": "CPUs of a local Ray; empty: all cores"})
    fault_injection: dict[str, int] = field(
        default_factory=dict,
        metadata={"help": "testing: condition label → number of attempts that fail on purpose before training"},
    )

    def __post_init__(self) -> None:
        if not self.conditions:
            raise LabError("conditions must list at least one condition")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise LabError("seeds must be a non-empty list without repeats")
        labels = list(condition_map(self))  # validates every entry, raises on duplicates
        for key, values in self.grid.items():
            section, _, name = key.partition(".")
            cls = {"hparams": TrainHParams, "lora": LoraSettings}.get(section)
            if cls is None or name not in {f.name for f in dataclasses.fields(cls)}:
                raise LabError(f"grid key '{key}' must be hparams.<field> or lora.<field>")
            if not isinstance(values, list) or not values:
                raise LabError(f"grid '{key}' must be a non-empty list of values")
        unknown = sorted(set(self.fault_injection) - set(labels))
        if unknown:
            raise LabError(f"fault_injection names unknown condition '{unknown[0]}'")


def condition_map(cfg: AblationConfig) -> dict[str, Condition]:
    """Label → Condition, in config order (label = the condition's name, e.g. 'dpo@code')."""
    out: dict[str, Condition] = {}
    for i, entry in enumerate(cfg.conditions):
        if not isinstance(entry, Mapping):
            entry = {"name": str(entry)}
        base = str(entry.get("base") or entry.get("name") or "").partition("@")[0]
        if "objective" not in entry and base not in CONDITIONS:
            get_condition(base)  # one line: unknown training condition '…' (known: …)
        cond = condition_from_dict(dict(entry))
        if cond.name in out:
            raise LabError(f"conditions[{i}]: duplicate condition '{cond.name}' (rename one with base:/name:)")
        out[cond.name] = cond
    return out


def absolutize(cfg: AblationConfig) -> AblationConfig:
    """Every path absolute (trials run in other directories and, inside `ray job submit`, in a copied working dir)."""

    def ab(p: str | None) -> str | None:
        return str(Path(p).expanduser().resolve()) if p else p

    uri = resolve_uri(cfg.tracking)  # fixed here: trials run in Tune's trial dirs, where a relative sqlite path moves
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).expanduser().resolve())
    model = cfg.model
    if Path(model.name).is_dir():
        model = dataclasses.replace(model, name=str(Path(model.name).resolve()))
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(model, cache_dir=ab(model.cache_dir), adapter=ab(model.adapter)),
        data=dataclasses.replace(cfg.data, path=ab(cfg.data.path)),
        deepspeed=ab(cfg.deepspeed),
        tracking=dataclasses.replace(cfg.tracking, uri=uri, artifact_root=ab(cfg.tracking.artifact_root)),
        output_dir=str(Path(cfg.output_dir).resolve()),
    )


@dataclass(frozen=True)
class TrialSpec:
    label: str
    seed: int
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """A directory- and run-name-safe id, e.g. 'dpo-s0' or 'dpo@code-s1-learning_rate=1e-05'."""
        parts = [self.label, f"s{self.seed}"] + [f"{k.split('.')[-1]}={v}" for k, v in self.overrides]
        return re.sub(r"[^A-Za-z0-9_.@,=+-]", "_", "-".join(parts))

    @property
    def variant(self) -> str:
        """The condition plus its grid point (what the comparison groups by; seeds are pooled)."""
        return self.label + "".join(f"[{k.split('.')[-1]}={v}]" for k, v in self.overrides)


def search_space(cfg: AblationConfig) -> dict[str, Any]:
    """Tune's param_space: a grid over condition labels × seeds × every `grid` entry."""
    from ray import tune

    space: dict[str, Any] = {
        "condition": tune.grid_search(list(condition_map(cfg))),
        "seed": tune.grid_search(list(cfg.seeds)),
    }
    for k, values in cfg.grid.items():
        space[k] = tune.grid_search(list(values))
    return space


def expected_trials(cfg: AblationConfig) -> list[TrialSpec]:
    """Every trial the grid must produce, in report order (a failed one is reported, never silently dropped)."""
    keys = list(cfg.grid)
    points = list(itertools.product(*(cfg.grid[k] for k in keys))) if keys else [()]
    return [
        TrialSpec(label, seed, tuple(zip(keys, pt)))
        for label in condition_map(cfg)
        for pt in points
        for seed in cfg.seeds
    ]


def spec_from_config(cfg: AblationConfig, config: Mapping[str, Any]) -> TrialSpec:
    return TrialSpec(str(config["condition"]), int(config["seed"]), tuple((k, config[k]) for k in cfg.grid))


def trial_settings(cfg: AblationConfig, spec: TrialSpec) -> tuple[Condition, LoraSettings, TrainHParams]:
    cond = condition_map(cfg)[spec.label]
    lora, hp = cfg.lora, cfg.hparams
    for key, value in spec.overrides:
        section, _, name = key.partition(".")
        if section == "lora":
            lora = from_dict(LoraSettings, to_dict(lora) | {name: value}, "lora")
        else:
            hp = from_dict(TrainHParams, to_dict(hp) | {name: value}, "hparams")
    return cond, lora, hp
