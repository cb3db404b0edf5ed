"""How a condition becomes a TRL trainer: the DPOConfig / SFTConfig keyword arguments from the hyper-parameters
(`trl_args`: warm-up from the real step count, the paper's validation and best-checkpoint options), the early-stopping
callback, `build_trainer` (PreferenceTrainer or SFTKLTrainer from training/lora/trainers.py), and `last_checkpoint` (the
newest complete `checkpoint-N` a killed run left, to resume from). TRL and transformers are imported inside these
functions only, so `training.lora.trainer` imports without them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.lora.conditions import Condition, LoraSettings, TrainHParams


def trl_args(
    hp: TrainHParams,
    *,
    output_dir: str | os.PathLike[str],
    n_rows: int,
    seed: int = 0,
    use_cpu: bool = True,
    bf16: bool = False,
    deepspeed: dict[str, Any] | None = None,
    max_steps: int | None = None,
    epochs: float | None = None,
    gradient_checkpointing: bool | None = None,
    checkpoint_steps: int = 0,
) -> dict[str, Any]:
    """Keyword arguments shared by the DPOConfig / SFTConfig of a run (warm-up from the real step count).
    `checkpoint_steps` > 0: a resumable checkpoint (adapter, optimizer, scheduler, RNG, trainer state) in
    `output_dir/checkpoint-N` every N optimizer steps and at the end, the newest two kept; with validation
    (`hp.eval_steps` > 0) the checkpoints are the validation ones."""
    steps = max_steps if max_steps is not None else hp.max_steps
    eps = epochs if epochs is not None else hp.epochs
    world = int(os.environ.get("WORLD_SIZE", "1"))
    total = dataclasses.replace(hp, max_steps=steps, epochs=eps).total_steps(n_rows, world)
    validation: dict[str, Any] = dict(save_strategy="no")
    if checkpoint_steps > 0:
        validation = dict(save_strategy="steps", save_steps=checkpoint_steps, save_total_limit=2)
    if hp.eval_steps > 0:  # the paper's validation: eval loss every K steps, best checkpoint restored at the end
        validation = dict(
            eval_strategy="steps",
            eval_steps=hp.eval_steps,
            save_strategy="steps",
            save_steps=hp.eval_steps,
            save_total_limit=2,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
        )
    return dict(
        **validation,
        output_dir=str(output_dir),
        learning_rate=hp.learning_rate,
        num_train_epochs=eps,
        max_steps=steps,
        per_device_train_batch_size=hp.per_device_batch_size,
        per_device_eval_batch_size=hp.per_device_batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        lr_scheduler_type=hp.lr_scheduler,
        warmup_steps=hp.warmup_steps(total),
        weight_decay=hp.weight_decay,
        optim=hp.optim,
        gradient_checkpointing=hp.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing,
        logging_steps=hp.logging_steps,
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=use_cpu,
        bf16=bf16,
        max_length=hp.max_length,
        deepspeed=deepspeed,
        disable_tqdm=True,
        precompute_ref_batch_size=hp.ref_batch_size,
    )


def early_stopping(hp: TrainHParams) -> list[Any]:
    """`[EarlyStoppingCallback(patience)]` when `hp` asks for early stopping, else `[]`."""
    if hp.early_stopping_patience <= 0:
        return []
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=hp.early_stopping_patience)]


def build_trainer(
    cond: Condition,
    model: Any,
    tok: Any,
    train_ds: Any,
    eval_ds: Any,
    args: dict[str, Any],
    lora: LoraSettings,
    callbacks: Sequence[Any] = (),
) -> Any:
    """The TRL trainer for `cond` (PreferenceTrainer or SFTKLTrainer) on prepared pairs; `args` from `trl_args`."""
    from trl import DPOConfig, SFTConfig

    from training.lora.trainers import PreferenceTrainer, SFTKLTrainer

    common = dict(
        model=model, processing_class=tok, peft_config=lora.peft_config(model=model), callbacks=list(callbacks)
    )
    args = dict(args)
    ref_batch_size = args.pop("precompute_ref_batch_size", None)
    if cond.objective == "sft":

        def to_sft(ds: Any) -> Any:
            return ds.rename_column(cond.sft_target, "completion").select_columns(["prompt", "completion"])

        cfg = SFTConfig(**args, completion_only_loss=True, packing=False)
        return SFTKLTrainer(
            args=cfg,
            train_dataset=to_sft(train_ds),
            eval_dataset=to_sft(eval_ds) if eval_ds is not None else None,
            kl_weight=cond.kl_weight,
            **common,
        )
    cfg = DPOConfig(
        **args,
        beta=cond.beta,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=cond.objective == "dpo",
        precompute_ref_batch_size=ref_batch_size,
    )
    return PreferenceTrainer(args=cfg, train_dataset=train_ds, eval_dataset=eval_ds, condition=cond, **common)


def last_checkpoint(folder: str | os.PathLike[str]) -> str | None:
    """The newest `checkpoint-N` in `folder` that was written to the end (its trainer_state.json is saved last), or
    None: a run killed while saving leaves a partial folder, and the one before it is used instead."""
    found = []
    for d in Path(folder).glob("checkpoint-*") if Path(folder).is_dir() else ():
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and (d / "trainer_state.json").is_file():
            found.append((int(m.group(1)), d))
    return str(max(found)[1]) if found else None


def resumed_metrics(resume: str, history: list[dict[str, Any]]) -> dict[str, float]:
    """The step a run resumed from, and train_loss over the whole curve (the Trainer's averages this run's steps)."""
    steps = [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h and "step" in h]
    out = {"resumed_from_step": float(Path(resume).name.rsplit("-", 1)[1])}
    if steps:  # each logged loss is the mean over the steps since the previous log
        spans = [s - p for (s, _), p in zip(steps, [0] + [s for s, _ in steps[:-1]])]
        out["train_loss"] = sum(w * x for w, (_, x) in zip(spans, steps)) / sum(spans)
    return out
