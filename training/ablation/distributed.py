"""A trial across several workers (the 32B path): Ray Train `TorchTrainer` + DeepSpeed for training, then a
one-worker `TorchTrainer` that evaluates the adapter.

`train_distributed` runs `train_worker` on `resources.workers` × (`cpus_per_worker`, `gpus_per_worker`) with the ZeRO
JSON of `deepspeed:` made concrete (`concrete_deepspeed`; under ZeRO-3 the weights are partitioned while loading);
rank 0 writes the adapter and logs the training curve to the trial's MLflow run (a `lab.run.tracking.RunRef`).
`evaluate_distributed` loads base model + adapter in one worker with `eval_gpus` (`device: auto` spreads it over
them) and evaluates in process. Ray Train schedules its workers outside the Tune trial's placement group, so nothing
nests.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.config import from_dict, to_dict
from lab.run.tracking import RunRef
from training.ablation.fitting import fit_adapter
from training.ablation.tune_config import AblationConfig, TrialResources, TrialSpec, trial_settings
from training.lora.conditions import TrainHParams


def concrete_deepspeed(
    spec: str | Mapping[str, Any] | None, hp: TrainHParams, world_size: int, bf16: bool = False
) -> dict | None:
    """The ZeRO config with its batch keys made concrete (equal to what transformers derives from `hp`), so the
    same dict can also drive `HfDeepSpeedConfig` (ZeRO-3 partitioned loading), which does not accept "auto"."""
    from training.lora.ds_config import deepspeed_config

    ds = deepspeed_config(spec)
    if ds is None:
        return None
    fill = {
        "train_micro_batch_size_per_gpu": hp.per_device_batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "train_batch_size": hp.per_device_batch_size * hp.gradient_accumulation_steps * world_size,
        "gradient_clipping": 1.0,
    }  # transformers' max_grad_norm default
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
    return (
        ScalingConfig(num_workers=r.workers, use_gpu=r.gpus_per_worker > 0, resources_per_worker=res),
        TorchConfig(backend=_backend(r, r.gpus_per_worker)),
    )


def _train_run_config(cfg: AblationConfig, name: str) -> Any:
    import ray.train

    return ray.train.RunConfig(
        name=f"{name}-{int(time.time())}",
        storage_path=str(Path(cfg.output_dir) / "ray_train"),
        failure_config=ray.train.FailureConfig(max_failures=0),
    )  # Tune retries the trial


def train_distributed(cfg: AblationConfig, spec: TrialSpec, adapter: Path, run: RunRef | None) -> dict:
    """Train one trial's adapter on a `TorchTrainer`; returns the metrics rank 0 reported."""
    from ray.train.torch import TorchTrainer

    sc, tc = scaling(cfg.resources)
    loop = {
        "job": to_dict(cfg),
        "label": spec.label,
        "seed": spec.seed,
        "overrides": list(spec.overrides),
        "adapter": str(adapter),
        "mlflow": dataclasses.asdict(run) if run else None,
    }
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop,
        scaling_config=sc,
        torch_config=tc,
        run_config=_train_run_config(cfg, f"train-{spec.key}"),
    )
    result = trainer.fit()
    return dict(result.metrics or {})


def train_worker(loop: dict[str, Any]) -> None:
    """Ray Train worker: load (partitioned under ZeRO-3), train with DeepSpeed, rank 0 writes the adapter."""
    import ray.train
    import torch

    from lab.model.loading import load, threads

    cfg = from_dict(AblationConfig, loop["job"])
    spec = TrialSpec(loop["label"], int(loop["seed"]), tuple(tuple(x) for x in loop["overrides"]))
    cond, lora, hp = trial_settings(cfg, spec)
    threads(cfg.resources.threads)
    ctx = ray.train.get_context()
    on_gpu = cfg.resources.gpus_per_worker > 0 and torch.cuda.is_available()
    ds = concrete_deepspeed(cfg.deepspeed, hp, ctx.get_world_size(), bf16=on_gpu and torch.cuda.is_bf16_supported())
    keep = None
    if ds is not None and int(ds.get("zero_optimization", {}).get("stage", 0)) == 3:
        from transformers.integrations import HfDeepSpeedConfig

        from training.lora.ds_config import init_deepspeed

        init_deepspeed(use_cpu=not on_gpu)
        keep = HfDeepSpeedConfig(ds)  # noqa: F841  (must stay alive: from_pretrained partitions under zero.Init)
    lm = load(dataclasses.replace(cfg.model, device="cpu"))  # the Trainer / DeepSpeed place it
    run = RunRef(**loop["mlflow"]) if loop["mlflow"] else None
    res = fit_adapter(cfg, spec, (cond, lora, hp), lm, Path(loop["adapter"]), run, deepspeed=ds, use_cpu=not on_gpu)
    ray.train.report({k: float(v) for k, v in res.metrics.items()})
    del keep


def evaluate_distributed(cfg: AblationConfig, adapter: Path, out: Path) -> dict[str, Any]:
    """Evaluate `adapter` on a one-worker `TorchTrainer`; returns `eval_payload` plus `eval_seconds`."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    r = cfg.resources
    sc = ScalingConfig(
        num_workers=1, use_gpu=r.eval_gpus > 0, resources_per_worker={"CPU": r.eval_cpus, "GPU": r.eval_gpus}
    )
    trainer = TorchTrainer(
        eval_worker,
        train_loop_config={"job": to_dict(cfg), "adapter": str(adapter), "out": str(out)},
        scaling_config=sc,
        torch_config=TorchConfig(backend=_backend(r, r.eval_gpus)),
        run_config=_train_run_config(cfg, f"eval-{adapter.parent.name}"),
    )
    result = trainer.fit()
    payload = json.loads((out / "payload.json").read_text())
    return payload | {"eval_seconds": (result.metrics or {}).get("eval_seconds", math.nan)}


def eval_worker(loop: dict[str, Any]) -> None:
    """Ray Train worker (1 per trial): base model + adapter over this worker's GPUs, in-process concept injection."""
    import ray.train

    from training.ablation.evaluate import eval_payload, evaluate_adapter

    cfg = from_dict(AblationConfig, loop["job"])
    t0 = time.time()
    ev = evaluate_adapter(cfg.model, loop["adapter"], cfg.evaluation, loop["out"], threads=cfg.resources.threads)
    (Path(loop["out"]) / "payload.json").write_text(json.dumps(eval_payload(ev), default=float))
    ray.train.report({"eval_seconds": time.time() - t0})
