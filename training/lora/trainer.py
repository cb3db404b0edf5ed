"""One entry point: `train(condition, data, ...)` → a PEFT LoRA adapter on disk plus its training curve.

The run directory is built as `.<name>.partial` beside `output_dir` and renamed into place at the end, so a
crashed or killed run never leaves a half-written adapter. It holds the adapter (`adapter_config.json`,
`adapter_model.safetensors`, loadable with `peft.PeftModel.from_pretrained(base, output_dir)` or
`lab.model.loading.load(..., adapter=output_dir)`), the tokenizer, a model card, and `training.json` (condition,
LoRA settings, hyper-parameters, seed, metrics, log history).
With `checkpoint_dir`, the Trainer saves resumable checkpoints there every `checkpoint_steps` optimizer steps (and
at the end), and a run that finds one there resumes from the newest complete one: a killed run loses at most the
steps since its last checkpoint. The caller removes the checkpoints once it no longer needs them.
The base model object is modified in place while training (LoRA layers, a fused LM head) and restored afterwards.
The TRL configuration and trainer of a condition come from training/lora/trl_setup.py.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lab.config import to_dict
from lab.errors import LabError
from training.lora.conditions import PAPER_HPARAMS, PAPER_LORA, Condition, LoraSettings, TrainHParams, get_condition
from training.lora.ds_config import deepspeed_config, init_deepspeed
from training.lora.trl_setup import build_trainer, early_stopping, last_checkpoint, resumed_metrics, trl_args
from training.preference.data import load_preferences, select_domains, swap_pairs


@dataclass(frozen=True)
class TrainResult:
    """Where the adapter is, the final metrics, and the Trainer's log history (one entry per logging step)."""

    adapter_dir: Path
    metrics: dict[str, float]
    log_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def losses(self) -> list[tuple[int, float]]:
        """(optimizer step, training loss) per logging step."""
        return [(int(h["step"]), float(h["loss"])) for h in self.log_history if "loss" in h and "step" in h]


def train(
    condition: Condition | str,
    data: Any,
    *,
    output_dir: str | os.PathLike[str],
    lora: LoraSettings | None = None,
    hparams: TrainHParams | None = None,
    seed: int = 0,
    model: Any = "smollm2-135m",
    tokenizer: Any = None,
    eval_data: Any = None,
    deepspeed: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    gradient_checkpointing: bool | None = None,
    bf16: bool | None = None,
    max_steps: int | None = None,
    epochs: float | None = None,
    use_cpu: bool | None = None,
    callbacks: Sequence[Any] = (),
    overwrite: bool = False,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_steps: int = 0,
) -> TrainResult:
    """Train one condition's LoRA adapter and write it atomically to `output_dir`.

    `data` / `eval_data`: anything `training.preference.data.load_preferences` reads (path, Dataset, list of rows).
    `model`: a registry name / local HF dir (loaded with `lab.model.loading.load`), a `lab.model.loading.LoadedModel`, or a
    `PreTrainedModel` together with `tokenizer`. `deepspeed`: a ZeRO JSON path or dict. `bf16` / `use_cpu`:
    None = decide from the hardware (bf16 on a bf16-capable GPU; CPU when no GPU is visible). `max_steps`,
    `epochs`, `gradient_checkpointing` override `hparams` (paper preset by default). `checkpoint_dir` /
    `checkpoint_steps`: resumable checkpoints, and resume from the newest one found (module docstring).
    """
    cond = get_condition(condition) if isinstance(condition, str) else condition
    lora = lora or PAPER_LORA
    hp = hparams or PAPER_HPARAMS
    out = Path(output_dir)
    if out.exists() and not overwrite:
        raise LabError(f"output directory {out} already exists (pass overwrite=True to replace it)")
    cuda = torch.cuda.is_available()
    use_cpu = (not cuda) if use_cpu is None else use_cpu
    bf16 = (cuda and not use_cpu and torch.cuda.is_bf16_supported()) if bf16 is None else bf16
    ds_cfg = deepspeed_config(deepspeed)
    if ds_cfg is not None:
        init_deepspeed(use_cpu)
    train_ds = prepare_pairs(cond, data, seed)
    eval_ds = prepare_pairs(cond, eval_data, seed) if eval_data is not None else None
    hf_model, tok = _resolve_model(model, tokenizer, bf16)

    main = int(os.environ.get("RANK", "0")) == 0
    tmp = out.parent / f".{out.name}.partial"  # same name on every rank of a distributed run
    if main:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if cond.objective == "none":
            if cond.random_init == "peft":
                peft_model = peft_random_lora(hf_model, lora, seed)
            else:
                peft_model = random_lora(hf_model, lora, cond.random_delta_rel, seed)
            metrics: dict[str, float] = {"train_steps": 0.0, "random_delta_rel": cond.random_delta_rel}
            history: list[dict[str, Any]] = []
            peft_model.save_pretrained(str(tmp))
        else:
            ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else tmp / "_trainer"
            device = dict(use_cpu=use_cpu, bf16=bf16, deepspeed=ds_cfg, gradient_checkpointing=gradient_checkpointing)
            length = dict(
                max_steps=max_steps,
                epochs=epochs,
                checkpoint_steps=checkpoint_steps if checkpoint_dir is not None else 0,
            )
            args = trl_args(hp, output_dir=ckpt, n_rows=len(train_ds), seed=seed, **device, **length)
            if hp.eval_steps > 0 and eval_ds is None:
                raise LabError("hparams.eval_steps > 0 needs eval_data (validation during training)")
            trainer = build_trainer(
                cond, hf_model, tok, train_ds, eval_ds, args, lora, list(callbacks) + early_stopping(hp)
            )
            resume = last_checkpoint(ckpt) if checkpoint_dir is not None else None
            if resume and main:
                print(f"training: resuming from {resume}")
            output = trainer.train(resume_from_checkpoint=resume)
            metrics = {k: float(v) for k, v in output.metrics.items() if isinstance(v, (int, float))}
            metrics["train_steps"] = float(trainer.state.global_step)
            if resume:  # the Trainer's train_loss averages this run's steps only: the whole curve's instead
                metrics |= resumed_metrics(resume, trainer.state.log_history)
            if hp.eval_steps > 0 and trainer.state.best_metric is not None:  # the restored checkpoint
                metrics["best_eval_loss"] = float(trainer.state.best_metric)
                best = getattr(trainer.state, "best_global_step", None)
                if best is not None:
                    metrics["best_step"] = float(best)
            if eval_ds is not None:
                metrics.update({k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
            history = [dict(h) for h in trainer.state.log_history]
            trainer.save_model(str(tmp))  # collective under DeepSpeed (gathers ZeRO-3 shards); rank 0 writes
            main = trainer.accelerator.is_main_process
        if main:
            _finish(tmp, cond, lora, hp, seed, metrics, history)
            _swap_into_place(tmp, out)
    finally:
        if main and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _restore(hf_model)
    return TrainResult(out, metrics, history)


def prepare_pairs(cond: Condition, data: Any, seed: int) -> Any:
    """Load/validate, keep the condition's domains, swap pairs as the condition says; only the three text columns."""
    ds = load_preferences(data)
    if cond.domains:
        ds = select_domains(ds, cond.domains)
    if cond.swap_prob > 0:
        ds = swap_pairs(ds, cond.swap_prob, seed)
    return ds.select_columns(["prompt", "chosen", "rejected"])


def _resolve_model(model: Any, tokenizer: Any, bf16: bool) -> tuple[Any, Any]:
    from lab.model.loading import LoadedModel, load

    if isinstance(model, str):
        from lab.config import ModelConfig

        model = load(ModelConfig(name=model, dtype="bfloat16" if bf16 else "float32"))
    if isinstance(model, LoadedModel):
        return model.model, tokenizer or model.tokenizer
    if tokenizer is None:
        raise LabError("train(model=<PreTrainedModel>) needs tokenizer= as well")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def random_lora(model: Any, lora: LoraSettings, delta_rel: float, seed: int) -> Any:
    """Wrap `model` in an untrained LoRA whose B is random (seeded), scaled so ‖ΔW‖_F = delta_rel·‖W‖_F per layer."""
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import set_seed

    set_seed(seed)
    peft_model = get_peft_model(model, lora.peft_config(model=model))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, mod in peft_model.named_modules():
            if not isinstance(mod, LoraLayer) or "default" not in mod.lora_A:
                continue
            a = mod.lora_A["default"].weight
            b = mod.lora_B["default"].weight
            w = mod.get_base_layer().weight.float()
            new_b = torch.randn(b.shape, generator=gen)
            delta = mod.scaling["default"] * (new_b @ a.detach().float().cpu())
            new_b *= delta_rel * w.norm().cpu() / delta.norm().clamp(min=1e-12)
            b.copy_(new_b.to(b.dtype))
    return peft_model


def peft_random_lora(model: Any, lora: LoraSettings, seed: int) -> Any:
    """Wrap `model` in an untrained LoRA from PEFT's own random init (`init_lora_weights=False`: A and B both random,
    not rescaled), seeded with `transformers.set_seed(seed)` — the paper's random-LoRA control."""
    from peft import get_peft_model
    from transformers import set_seed

    set_seed(seed)
    return get_peft_model(model, lora.peft_config(init_lora_weights=False, model=model))


def _finish(
    tmp: Path,
    cond: Condition,
    lora: LoraSettings,
    hp: TrainHParams,
    seed: int,
    metrics: dict[str, float],
    history: list[dict[str, Any]],
) -> None:
    shutil.rmtree(tmp / "_trainer", ignore_errors=True)
    if not (tmp / "adapter_config.json").is_file():
        raise LabError(f"saving the adapter to {tmp} wrote no adapter_config.json")
    record = {
        "condition": to_dict(cond),
        "lora": to_dict(lora),
        "hparams": to_dict(hp),
        "seed": seed,
        "metrics": metrics,
        "log_history": history,
    }
    (tmp / "training.json").write_text(json.dumps(record, indent=1, default=str))


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _restore(model: Any) -> None:
    """Undo the in-place changes to the caller's base model: LoRA layers and TRL's fused-LM-head forward."""
    from peft.tuners.lora import LoraLayer

    if any(isinstance(m, LoraLayer) for m in model.modules()):
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, mod in list(model.named_modules()):
            if isinstance(mod, BaseTunerLayer):
                parent_name, _, child = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, child, mod.get_base_layer())
    model.__dict__.pop("forward", None)
    for undo in ("disable_input_require_grads", "gradient_checkpointing_disable"):
        try:
            getattr(model, undo)()
        except (AttributeError, ValueError, RuntimeError):
            pass
    if hasattr(model, "peft_config"):
        try:
            del model.peft_config
        except AttributeError:
            pass


def step_logger(run: Any) -> Any:
    """A `TrainerCallback` that logs every Trainer log entry (loss, lr, …) with its optimizer step to the MLflow run
    `run` (a `lab.run.tracking.RunRef`), from world rank 0 only — in process or in a Ray Train worker."""
    from transformers import TrainerCallback

    from lab.run.tracking import log_to_run

    class MlflowStepLogger(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs and state.is_world_process_zero:
                log_to_run(run, logs, step=int(state.global_step))

    return MlflowStepLogger()
