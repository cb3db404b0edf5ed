"""The DPO-component ablation as Ray Tune trials: config, search space, the trainable, MLflow child runs.

One trial = one (condition, seed[, grid point]): train the condition's LoRA adapter (`training.trainer.train`), then
evaluate it with concept vectors re-extracted from the adapted model (`training.evaluate.evaluate_adapter`, the same
trials for every condition). Each trial logs one MLflow child run (tag `mlflow.parentRunId`): params (condition,
LoRA, hyper-parameters, seed, data, evaluation), tags condition / domain / seed / attempt, the training curve (every
Trainer log entry — `loss`, `learning_rate`, `grad_norm`, `rewards/*` … — as metrics with `step`), and the
evaluation rates with Wilson bounds (`tpr`, `tpr_lo`, `tpr_hi`, `n_tpr`, `fpr…`, `introspection…`, `random_rate…`).

Two ways to run a trial, picked by `resources.workers`:
* 1 (the demo, one GPU or a CPU): everything in the trial's own process; Tune reserves `resources.cpus/gpus`.
* > 1 (a 32B model): the trial is a thin driver (1 CPU) that runs a Ray Train `TorchTrainer` with `workers` ×
  (`cpus_per_worker`, `gpus_per_worker`) and DeepSpeed (`deepspeed:` ZeRO JSON, e.g. cluster/deepspeed/zero3.json;
  with ZeRO-3 the weights are partitioned while loading), then a second one-worker `TorchTrainer` with `eval_gpus`
  that loads the base model + adapter (`device: auto` spreads it over those GPUs) and evaluates in process. Ray
  Train schedules its own workers outside the Tune trial's placement group, so nothing nests.

MLflow runs are driven through `MlflowClient` with an explicit tracking URI and run id (never the process-global
active run), so the loss callback can log from a Ray Train rank-0 worker as well as in process.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lab.config import ModelConfig, flatten, from_dict, to_dict
from lab.errors import LabError
from lab.tracking import TrackingConfig
from training.conditions import (CONDITIONS, PAPER_HPARAMS, PAPER_LORA, Condition, LoraSettings, TrainHParams,
                                 condition_from_dict, get_condition)
from training.evaluate import EvalSpec


# ---------------------------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class DataSpec:
    """Preference data: a file (JSONL / Parquet / save_to_disk dir) or the seeded synthetic generator."""

    path: str | None = field(default=None, metadata={"help": "preference data; empty: training.synthetic pairs"})
    synthetic_pairs: int = field(default=5000, metadata={"help": "pairs generated when path is empty"})
    synthetic_seed: int = 0
    synthetic_domains: tuple[str, ...] = field(default=(), metadata={"help": "generator domains; empty: all"})
    format: Literal["auto", "conversational", "plain"] = field(default="conversational", metadata={
        "help": "conversational = chat messages (the chat template is applied, as in the evaluation)"})
    eval_fraction: float = field(default=0.1, metadata={"help": "held-out share (eval loss); 0 = none"})
    split_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise LabError(f"data.eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.path is None and self.synthetic_pairs < 1:
            raise LabError("data.synthetic_pairs must be >= 1 when data.path is empty")


@dataclass(frozen=True)
class TrialResources:
    """What one trial reserves, how many run at once, and how failures are retried."""

    cpus: float = field(default=1.0, metadata={"help": "Ray CPUs per trial (workers = 1) / of the trial driver"})
    gpus: float = field(default=0.0, metadata={"help": "Ray GPUs per trial (workers = 1)"})
    threads: int = field(default=1, metadata={"help": "torch intra-op threads per trial or worker (0 = Ray's)"})
    workers: int = field(default=1, metadata={"help": "> 1: Ray Train TorchTrainer with this many workers"})
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    resources_per_worker: dict[str, float] = field(default_factory=dict, metadata={"help": "custom Ray resources"})
    eval_cpus: float = field(default=1.0, metadata={"help": "workers > 1: CPUs of the evaluation worker"})
    eval_gpus: float = field(default=0.0, metadata={"help": "workers > 1: GPUs of the evaluation worker"})
    backend: Literal["auto", "nccl", "gloo"] = field(default="auto", metadata={"help": "auto: nccl on GPUs"})
    max_concurrent_trials: int = field(default=1, metadata={"help": "trials running at once"})
    max_failures: int = field(default=1, metadata={"help": "retries of a failed trial (tune.FailureConfig)"})

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_concurrent_trials < 1 or self.max_failures < 0 or self.threads < 0:
            raise LabError("resources: workers and max_concurrent_trials must be >= 1, max_failures and threads >= 0")
        if min(self.cpus, self.gpus, self.cpus_per_worker, self.gpus_per_worker, self.eval_cpus, self.eval_gpus) < 0:
            raise LabError("resources: CPU and GPU amounts must be >= 0")

    @property
    def distributed(self) -> bool:
        return self.workers > 1


@dataclass(frozen=True)
class AblationConfig:
    """The DPO-component ablation (configs/ablations-demo.yaml, configs/ablations-olmo-3.1-32b.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSpec = field(default_factory=DataSpec)
    conditions: tuple[dict[str, Any], ...] = field(default=(), metadata={
        "help": "training.conditions.condition_from_dict entries: a registered name plus overrides"})
    seeds: tuple[int, ...] = (0,)
    lora: LoraSettings = PAPER_LORA
    hparams: TrainHParams = PAPER_HPARAMS
    grid: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "extra search space: 'hparams.<field>' / 'lora.<field>' → list of values (grid search)"})
    deepspeed: str | None = field(default=None, metadata={"help": "ZeRO JSON (cluster/deepspeed/zero3.json)"})
    resources: TrialResources = field(default_factory=TrialResources)
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="dpo-ablation"))
    output_dir: str = field(default="results/ablations", metadata={
        "help": "adapters, evaluations, Tune state, report (shared storage on a multi-node cluster)"})
    address: str | None = field(default=None, metadata={
        "help": "Ray address; empty: $RAY_ADDRESS (inside `ray job submit`) or a local Ray on loopback"})
    ray_cpus: float | None = field(default=None, metadata={"help": "CPUs of a local Ray; empty: all cores"})
    fault_injection: dict[str, int] = field(default_factory=dict, metadata={
        "help": "testing: condition label → number of attempts that fail on purpose before training"})

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

    from lab.tracking import resolve_uri

    uri = resolve_uri(cfg.tracking)  # fixed here: trials run in Tune's trial dirs, where a relative sqlite path moves
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).expanduser().resolve())
    model = cfg.model
    if Path(model.name).is_dir():
        model = dataclasses.replace(model, name=str(Path(model.name).resolve()))
    return dataclasses.replace(
        cfg, model=dataclasses.replace(model, cache_dir=ab(model.cache_dir), adapter=ab(model.adapter)),
        data=dataclasses.replace(cfg.data, path=ab(cfg.data.path)), deepspeed=ab(cfg.deepspeed),
        tracking=dataclasses.replace(cfg.tracking, uri=uri, artifact_root=ab(cfg.tracking.artifact_root)),
        output_dir=str(Path(cfg.output_dir).resolve()))


# ---------------------------------------------------------------------------------------------------------------
# search space


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

    space: dict[str, Any] = {"condition": tune.grid_search(list(condition_map(cfg))),
                             "seed": tune.grid_search(list(cfg.seeds))}
    for k, values in cfg.grid.items():
        space[k] = tune.grid_search(list(values))
    return space


def expected_trials(cfg: AblationConfig) -> list[TrialSpec]:
    """Every trial the grid must produce, in report order (a failed one is reported, never silently dropped)."""
    import itertools

    keys = list(cfg.grid)
    points = list(itertools.product(*(cfg.grid[k] for k in keys))) if keys else [()]
    return [TrialSpec(label, seed, tuple(zip(keys, pt))) for label in condition_map(cfg) for pt in points
            for seed in cfg.seeds]


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


# ---------------------------------------------------------------------------------------------------------------
# MLflow child runs (explicit URI and run id; works from any process)


def _params(d: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in d.items():
        s = "" if v is None else (",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
        out[k] = s if len(s) <= 500 else s[:499] + "…"
    return out


class ChildRun:
    """One MLflow run driven through `MlflowClient` (explicit URI and run id)."""

    def __init__(self, uri: str, run_id: str):
        from mlflow import MlflowClient

        self.uri, self.run_id = uri, run_id
        self.client = MlflowClient(uri)

    @classmethod
    def start(cls, tracking: TrackingConfig, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any],
              parent_run_id: str | None) -> ChildRun:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        from lab.tracking import check_uri, resolve_uri

        uri = check_uri(resolve_uri(tracking))
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(tracking.experiment)
        if exp is None:  # normally the driver's parent run created it
            root = tracking.artifact_root
            if root is None and uri.startswith("sqlite:///"):
                root = str(Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts")
            try:
                exp_id = client.create_experiment(tracking.experiment,
                                                  artifact_location=root and Path(root).resolve().as_uri())
            except Exception:  # created concurrently
                exp_id = client.get_experiment_by_name(tracking.experiment).experiment_id
        else:
            exp_id = exp.experiment_id
        all_tags = dict(tags) | ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})
        run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
        self = cls(uri, run.info.run_id)
        items = [Param(k, v) for k, v in _params(params).items()]
        for i in range(0, len(items), 100):
            client.log_batch(self.run_id, params=items[i:i + 100])
        return self

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        from lab.tracking import finite_metrics

        ts = int(time.time() * 1000)
        items = [Metric(k, v, ts, step or 0) for k, v in finite_metrics(metrics).items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, *paths: str | os.PathLike[str]) -> None:
        for p in paths:
            if Path(p).exists():
                self.client.log_artifact(self.run_id, str(p))

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def step_logger(uri: str, run_id: str) -> Any:
    """A transformers `TrainerCallback` that logs every Trainer log entry (loss, lr, …) with its optimizer step."""
    from transformers import TrainerCallback

    class MlflowStepLogger(TrainerCallback):
        def __init__(self) -> None:
            self.run: ChildRun | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or not state.is_world_process_zero:
                return
            if self.run is None:
                self.run = ChildRun(uri, run_id)
            self.run.log_metrics(logs, step=int(state.global_step))

    return MlflowStepLogger()


# ---------------------------------------------------------------------------------------------------------------
# one trial


def load_rows(data: DataSpec) -> tuple[Any, Any]:
    """(train rows, eval rows or None) as `datasets.Dataset`s, deterministic in the config."""
    from training.data import load_preferences, train_eval_split

    if data.path:
        source: Any = data.path
    else:
        from training.synthetic import generate_pairs

        source = generate_pairs(data.synthetic_pairs, seed=data.synthetic_seed,
                                domains=list(data.synthetic_domains) or None)
    ds = load_preferences(source, format=data.format)
    if data.eval_fraction <= 0:
        return ds, None
    tr, ev = train_eval_split(ds, data.eval_fraction, data.split_seed)
    return tr, (ev if len(ev) else None)


def trial_params(cfg: AblationConfig, spec: TrialSpec, cond: Condition, lora: LoraSettings,
                 hp: TrainHParams) -> dict[str, Any]:
    """Everything that determines a trial, flattened (each key logged exactly once)."""
    return flatten({"condition": to_dict(cond), "lora": to_dict(lora), "hparams": to_dict(hp), "seed": spec.seed,
                    "model": to_dict(cfg.model), "data": to_dict(cfg.data), "deepspeed": cfg.deepspeed,
                    "evaluation": to_dict(cfg.evaluation), "resources": to_dict(cfg.resources)})


def _attempt(cfg: AblationConfig, spec: TrialSpec) -> int:
    """Count this attempt in <output_dir>/.attempts/<key> (the driver clears it per job)."""
    d = Path(cfg.output_dir) / ".attempts"
    d.mkdir(parents=True, exist_ok=True)
    f = d / spec.key
    n = int(f.read_text() or 0) + 1 if f.exists() else 1
    f.write_text(str(n))
    return n


def run_trial(cfg: AblationConfig, spec: TrialSpec, parent_run_id: str | None = None,
              progress: bool = False) -> dict[str, Any]:
    """Train + evaluate one trial and log its MLflow child run. Returns the numbers Tune reports."""
    cond, lora, hp = trial_settings(cfg, spec)
    attempt = _attempt(cfg, spec)
    tdir = Path(cfg.output_dir) / "trials" / spec.key
    shutil.rmtree(tdir, ignore_errors=True)
    tdir.mkdir(parents=True)
    tags = {"job": "train_ablations", "condition": spec.label, "variant": spec.variant,
            "domain": ",".join(cond.domains) or "all", "seed": str(spec.seed), "objective": cond.objective,
            "attempt": str(attempt), "trial_key": spec.key,
            "mode": f"torchtrainer x{cfg.resources.workers}" if cfg.resources.distributed else "in-process"}
    child = None
    if cfg.tracking.enabled:
        child = ChildRun.start(cfg.tracking, spec.key, tags, trial_params(cfg, spec, cond, lora, hp), parent_run_id)
    t0 = time.time()
    try:
        if attempt <= cfg.fault_injection.get(spec.label, 0):
            raise RuntimeError(f"fault_injection: attempt {attempt} of '{spec.label}' fails on purpose")
        adapter = tdir / "adapter"
        if cfg.resources.distributed:
            train_metrics = _train_distributed(cfg, spec, adapter, child)
            ev = _evaluate_distributed(cfg, adapter, tdir / "eval")
        else:
            from training.evaluate import evaluate_adapter

            train_metrics = _train_local(cfg, spec, cond, lora, hp, adapter, child)
            t_eval = time.time()
            ev_res = evaluate_adapter(cfg.model, adapter, cfg.evaluation, tdir / "eval",
                                      threads=cfg.resources.threads, progress=progress)
            ev = _eval_payload(ev_res) | {"eval_seconds": time.time() - t_eval}
        summary = ev["summary"]
        result = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
        for m in ("tpr", "fpr", "introspection", "forced_id", "random_rate", "norm_matched_rate", "shuffled_rate"):
            if f"n_{m}" in summary and not math.isnan(summary.get(m, math.nan)):
                result[f"k_{m}"] = int(round(summary[m] * summary[f"n_{m}"]))
        result |= {f"train/{k}": v for k, v in train_metrics.items() if isinstance(v, (int, float))}
        result |= {"trial_seconds": time.time() - t0, "eval_seconds": ev.get("eval_seconds", math.nan),
                   "attempt": attempt}
        if child is not None:
            child.log_metrics({k: v for k, v in result.items() if not k.startswith("train/")} | ev["settings"])
            child.log_metrics({"train_steps": train_metrics.get("train_steps", math.nan)})
            child.set_tags({"eval_trials_hash": ev["trials_hash"], "adapter_dir": str(adapter),
                            "eval_dir": str(tdir / "eval")})
            child.log_artifacts(adapter / "training.json", tdir / "eval" / "report" / "by_setting.csv")
            child.end("FINISHED")
        return result | {"condition": spec.label, "seed": spec.seed, "variant": spec.variant,
                         "eval_trials_hash": ev["trials_hash"], "adapter_dir": str(adapter),
                         "mlflow_run_id": child.run_id if child else ""}
    except BaseException as e:
        if child is not None:
            try:
                child.set_tags({"error": f"{type(e).__name__}: {e}"[:4000]})
                child.end("FAILED")
            except Exception:  # never hide the trial's own error
                traceback.print_exc()
        raise


def _eval_payload(ev: Any) -> dict[str, Any]:
    from training.evaluate import setting_metrics

    return {"summary": dict(ev.summary), "settings": setting_metrics(ev.by_setting), "trials_hash": ev.trials_hash}


def _train_local(cfg: AblationConfig, spec: TrialSpec, cond: Condition, lora: LoraSettings, hp: TrainHParams,
                 adapter: Path, child: ChildRun | None) -> dict[str, float]:
    from lab.models import load, threads
    from training.trainer import train

    threads(cfg.resources.threads)
    train_ds, eval_ds = load_rows(cfg.data)
    lm = load(cfg.model)
    callbacks = [step_logger(child.uri, child.run_id)] if child is not None else []
    res = train(cond, train_ds, output_dir=adapter, model=lm, lora=lora, hparams=hp, seed=spec.seed,
                eval_data=eval_ds, deepspeed=cfg.deepspeed, callbacks=callbacks, overwrite=True)
    del lm
    return dict(res.metrics)


# ---------------------------------------------------------------------------------------------------------------
# a trial across several workers: Ray Train TorchTrainer + DeepSpeed (the 32B path)


def concrete_deepspeed(spec: str | Mapping[str, Any] | None, hp: TrainHParams, world_size: int,
                       bf16: bool = False) -> dict | None:
    """The ZeRO config with its batch keys made concrete (equal to what transformers derives from `hp`), so the
    same dict can also drive `HfDeepSpeedConfig` (ZeRO-3 partitioned loading), which does not accept "auto"."""
    from training.ds_config import deepspeed_config

    ds = deepspeed_config(spec)
    if ds is None:
        return None
    fill = {"train_micro_batch_size_per_gpu": hp.per_device_batch_size,
            "gradient_accumulation_steps": hp.gradient_accumulation_steps,
            "train_batch_size": hp.per_device_batch_size * hp.gradient_accumulation_steps * world_size,
            "gradient_clipping": 1.0}  # transformers' max_grad_norm default
    for k, v in fill.items():
        if ds.get(k) == "auto":
            ds[k] = v
    for k in ("bf16", "fp16"):
        if isinstance(ds.get(k), dict) and ds[k].get("enabled") == "auto":
            ds[k] = dict(ds[k], enabled=bf16 if k == "bf16" else False)  # train() picks bf16 on a bf16 GPU
    return ds


def _backend(r: TrialResources, gpus: float) -> str:
    return r.backend if r.backend != "auto" else ("nccl" if gpus > 0 else "gloo")


def scaling(r: TrialResources) -> tuple[Any, Any]:
    """(ScalingConfig, TorchConfig) of the training workers of one trial."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig

    res = {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker} | dict(r.resources_per_worker)
    return (ScalingConfig(num_workers=r.workers, use_gpu=r.gpus_per_worker > 0, resources_per_worker=res),
            TorchConfig(backend=_backend(r, r.gpus_per_worker)))


def _train_run_config(cfg: AblationConfig, name: str) -> Any:
    import ray.train

    return ray.train.RunConfig(name=f"{name}-{int(time.time())}", storage_path=str(Path(cfg.output_dir) / "ray_train"),
                               failure_config=ray.train.FailureConfig(max_failures=0))  # Tune retries the trial


def _train_distributed(cfg: AblationConfig, spec: TrialSpec, adapter: Path, child: ChildRun | None) -> dict:
    from ray.train.torch import TorchTrainer

    sc, tc = scaling(cfg.resources)
    loop = {"job": to_dict(cfg), "label": spec.label, "seed": spec.seed, "overrides": list(spec.overrides),
            "adapter": str(adapter), "mlflow": [child.uri, child.run_id] if child else None}
    trainer = TorchTrainer(train_worker, train_loop_config=loop, scaling_config=sc, torch_config=tc,
                           run_config=_train_run_config(cfg, f"train-{spec.key}"))
    result = trainer.fit()
    return dict(result.metrics or {})


def train_worker(loop: dict[str, Any]) -> None:
    """Ray Train worker: load (partitioned under ZeRO-3), train with DeepSpeed, rank 0 writes the adapter."""
    import ray.train

    from lab.models import load, threads
    from training.trainer import train

    cfg = from_dict(AblationConfig, loop["job"])
    spec = TrialSpec(loop["label"], int(loop["seed"]), tuple(tuple(x) for x in loop["overrides"]))
    cond, lora, hp = trial_settings(cfg, spec)
    threads(cfg.resources.threads)
    ctx = ray.train.get_context()
    import torch

    on_gpu = cfg.resources.gpus_per_worker > 0 and torch.cuda.is_available()
    ds = concrete_deepspeed(cfg.deepspeed, hp, ctx.get_world_size(), bf16=on_gpu and torch.cuda.is_bf16_supported())
    keep = None
    if ds is not None and int(ds.get("zero_optimization", {}).get("stage", 0)) == 3:
        from transformers.integrations import HfDeepSpeedConfig

        from training.ds_config import init_deepspeed

        init_deepspeed(use_cpu=not on_gpu)
        keep = HfDeepSpeedConfig(ds)  # noqa: F841  (must stay alive: from_pretrained partitions under zero.Init)
    train_ds, eval_ds = load_rows(cfg.data)
    lm = load(dataclasses.replace(cfg.model, device="cpu"))  # the Trainer / DeepSpeed place it
    callbacks = [step_logger(*loop["mlflow"])] if loop["mlflow"] else []
    res = train(cond, train_ds, output_dir=loop["adapter"], model=lm, lora=lora, hparams=hp, seed=spec.seed,
                eval_data=eval_ds, deepspeed=ds, callbacks=callbacks, overwrite=True,
                use_cpu=not on_gpu)
    ray.train.report({k: float(v) for k, v in res.metrics.items()})
    del keep


def _evaluate_distributed(cfg: AblationConfig, adapter: Path, out: Path) -> dict[str, Any]:
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    r = cfg.resources
    sc = ScalingConfig(num_workers=1, use_gpu=r.eval_gpus > 0, resources_per_worker={"CPU": r.eval_cpus,
                                                                                       "GPU": r.eval_gpus})
    trainer = TorchTrainer(eval_worker, train_loop_config={"job": to_dict(cfg), "adapter": str(adapter),
                                                           "out": str(out)},
                           scaling_config=sc, torch_config=TorchConfig(backend=_backend(r, r.eval_gpus)),
                           run_config=_train_run_config(cfg, f"eval-{adapter.parent.name}"))
    result = trainer.fit()
    payload = json.loads((out / "payload.json").read_text())
    return payload | {"eval_seconds": (result.metrics or {}).get("eval_seconds", math.nan)}


def eval_worker(loop: dict[str, Any]) -> None:
    """Ray Train worker (1 per trial): base model + adapter over this worker's GPUs, in-process concept injection."""
    import ray.train

    from training.evaluate import evaluate_adapter

    cfg = from_dict(AblationConfig, loop["job"])
    t0 = time.time()
    ev = evaluate_adapter(cfg.model, loop["adapter"], cfg.evaluation, loop["out"], threads=cfg.resources.threads)
    (Path(loop["out"]) / "payload.json").write_text(json.dumps(_eval_payload(ev), default=float))
    ray.train.report({"eval_seconds": time.time() - t0})


# ---------------------------------------------------------------------------------------------------------------
# Tune


def trainable(config: dict[str, Any], job: dict[str, Any], parent_run_id: str | None) -> None:
    """The Tune function trainable: one (condition, seed[, grid point]) per trial; reports once, at the end."""
    from ray import tune

    cfg = from_dict(AblationConfig, job)
    tune.report(run_trial(cfg, spec_from_config(cfg, config), parent_run_id))


def tuner(cfg: AblationConfig, parent_run_id: str | None, name: str | None = None) -> Any:
    """A `tune.Tuner` over `search_space(cfg)` with per-trial resources, concurrency and retries from the config."""
    from ray import tune

    r = cfg.resources
    res = {"cpu": r.cpus, "gpu": 0.0} if r.distributed else {"cpu": r.cpus, "gpu": r.gpus}
    fn = tune.with_resources(tune.with_parameters(trainable, job=to_dict(cfg), parent_run_id=parent_run_id), res)

    def trial_name(t: Any) -> str:
        return spec_from_config(cfg, t.config).key

    return tune.Tuner(
        fn, param_space=search_space(cfg),
        tune_config=tune.TuneConfig(max_concurrent_trials=r.max_concurrent_trials, num_samples=1,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(name=name or f"ablations-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str(Path(cfg.output_dir) / "tune"),
                                  failure_config=tune.FailureConfig(max_failures=r.max_failures), verbose=1))


def clear_attempts(cfg: AblationConfig) -> None:
    shutil.rmtree(Path(cfg.output_dir) / ".attempts", ignore_errors=True)


def attempts(cfg: AblationConfig, spec: TrialSpec) -> int:
    f = Path(cfg.output_dir) / ".attempts" / spec.key
    return int(f.read_text() or 0) if f.exists() else 0
