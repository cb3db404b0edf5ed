"""One Tune trial of the DPO-component ablation: train a condition's LoRA adapter, evaluate it, log an MLflow child run.

One trial = one (condition, seed[, grid point]) (`training.ablation.tune_config.TrialSpec`): train the adapter
(`training.lora.trainer.train`), then evaluate it with concept vectors re-extracted from the adapted model
(`training.ablation.evaluate.evaluate_adapter`, the same trials for every condition). Each trial logs one MLflow child run
(tag `mlflow.parentRunId`) through `lab.run.tracking.RunRef`: params (condition, LoRA, hyper-parameters, seed, data,
evaluation), tags condition / domain / seed / attempt, the training curve (every Trainer log entry — `loss`,
`learning_rate`, `grad_norm`, `rewards/*` … — as metrics with `step`), and the evaluation rates with Wilson bounds
(`tpr`, `tpr_lo`, `tpr_hi`, `n_tpr`, `fpr…`, `introspection…`, `random_rate…`).

`resources.workers` picks how: 1 (the demo, one GPU or a CPU) trains and evaluates in this process; > 1 hands both to
Ray Train (`training.ablation.distributed`). Attempts are counted in files under `<output_dir>/.attempts` (Tune retries a
failed trial in a fresh process), so every child run records which attempt it was. Training writes resumable
checkpoints to `trials/<key>/checkpoints` every `resources.checkpoint_steps` steps: a trial killed mid-training (node
lost, OOM, `ray job stop`) restarts from its last one on the retry or rerun — when the same settings wrote it — and
they are removed once the trial's result is stored.
"""

from __future__ import annotations

import math
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from lab.config import flatten, to_dict
from lab.run import store, tracking
from training.ablation.fitting import CHECKPOINTS, fit_adapter
from training.ablation.tune_config import AblationConfig, TrialSpec, trial_settings
from training.lora.conditions import Condition, LoraSettings, TrainHParams

COUNTED_RATES = (
    "tpr",
    "fpr",
    "introspection",
    "forced_id",
    "random_rate",
    "norm_matched_rate",
    "shuffled_rate",
    "negative_rate",
)


def trial_params(
    cfg: AblationConfig, spec: TrialSpec, cond: Condition, lora: LoraSettings, hp: TrainHParams
) -> dict[str, Any]:
    """Everything that determines a trial, flattened (each key logged exactly once)."""
    return flatten(
        {
            "condition": to_dict(cond),
            "lora": to_dict(lora),
            "hparams": to_dict(hp),
            "seed": spec.seed,
            "model": to_dict(cfg.model),
            "data": to_dict(cfg.data),
            "deepspeed": cfg.deepspeed,
            "evaluation": to_dict(cfg.evaluation),
            "resources": to_dict(cfg.resources),
        }
    )


RESULT_FILE = "result.json"


def _settings(cfg: AblationConfig, spec: TrialSpec) -> dict[str, Any]:
    """What determines a trial's adapter and evaluation (not where or on how many workers it ran)."""
    params = trial_params(cfg, spec, *trial_settings(cfg, spec))
    return {k: v for k, v in params.items() if not k.startswith("resources.")}


def stored_result(cfg: AblationConfig, spec: TrialSpec) -> dict[str, Any] | None:
    """The finished trial's result, stored under <output_dir>/trials/<key>/ with its adapter and evaluation, if the
    same settings made it (condition, LoRA, hyper-parameters, seed, model, data, evaluation)."""
    return store.load_result(Path(cfg.output_dir) / "trials" / spec.key / RESULT_FILE, _settings(cfg, spec))


def prepare_trial_dir(cfg: AblationConfig, spec: TrialSpec) -> Path:
    """Empty <output_dir>/trials/<key>/ for a new attempt, but keep checkpoints/ if the same settings wrote it (a
    stamp of them is stored beside the checkpoints); returns the folder."""
    tdir = Path(cfg.output_dir) / "trials" / spec.key
    store.fresh_dir(tdir, CHECKPOINTS, _settings(cfg, spec))
    return tdir


def record_attempt(cfg: AblationConfig, spec: TrialSpec) -> int:
    """Count this attempt in <output_dir>/.attempts/<key> (the driver clears it per job); returns its number."""
    d = Path(cfg.output_dir) / ".attempts"
    d.mkdir(parents=True, exist_ok=True)
    f = d / spec.key
    n = int(f.read_text() or 0) + 1 if f.exists() else 1
    f.write_text(str(n))
    return n


def attempts(cfg: AblationConfig, spec: TrialSpec) -> int:
    f = Path(cfg.output_dir) / ".attempts" / spec.key
    return int(f.read_text() or 0) if f.exists() else 0


def clear_attempts(cfg: AblationConfig) -> None:
    shutil.rmtree(Path(cfg.output_dir) / ".attempts", ignore_errors=True)


def run_trial(
    cfg: AblationConfig, spec: TrialSpec, parent_run_id: str | None = None, progress: bool = False
) -> dict[str, Any]:
    """Train + evaluate one trial and log its MLflow child run. Returns the numbers Tune reports; a trial finished
    by an earlier run with the same settings is not trained again (its stored result is returned)."""
    done = stored_result(cfg, spec)
    if done is not None:
        return done
    cond, lora, hp = trial_settings(cfg, spec)
    attempt = record_attempt(cfg, spec)
    tdir = prepare_trial_dir(cfg, spec)
    tags = {
        "job": "train_ablations",
        "condition": spec.label,
        "variant": spec.variant,
        "domain": ",".join(cond.domains) or "all",
        "seed": str(spec.seed),
        "objective": cond.objective,
        "attempt": str(attempt),
        "trial_key": spec.key,
        "mode": f"torchtrainer x{cfg.resources.workers}" if cfg.resources.distributed else "in-process",
    }
    run = None
    if cfg.tracking.enabled:
        run = tracking.start_run(cfg.tracking, spec.key, tags, trial_params(cfg, spec, cond, lora, hp), parent_run_id)
    t0 = time.time()
    try:
        if attempt <= cfg.fault_injection.get(spec.label, 0):
            raise RuntimeError(f"fault_injection: attempt {attempt} of '{spec.label}' fails on purpose")
        adapter = tdir / "adapter"
        if cfg.resources.distributed:
            from training.ablation.distributed import evaluate_distributed, train_distributed

            train_metrics = train_distributed(cfg, spec, adapter, run)
            ev = evaluate_distributed(cfg, adapter, tdir / "eval")
        else:
            from training.ablation.evaluate import eval_payload, evaluate_adapter

            train_metrics = _train_local(cfg, spec, cond, lora, hp, adapter, run)
            t_eval = time.time()
            ev_res = evaluate_adapter(
                cfg.model, adapter, cfg.evaluation, tdir / "eval", threads=cfg.resources.threads, progress=progress
            )
            ev = eval_payload(ev_res) | {"eval_seconds": time.time() - t_eval}
        summary = ev["summary"]
        result = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
        for m in COUNTED_RATES:
            if f"n_{m}" in summary and not math.isnan(summary.get(m, math.nan)):
                result[f"k_{m}"] = int(round(summary[m] * summary[f"n_{m}"]))
        result |= {f"train/{k}": v for k, v in train_metrics.items() if isinstance(v, (int, float))}
        result |= {
            "trial_seconds": time.time() - t0,
            "eval_seconds": ev.get("eval_seconds", math.nan),
            "attempt": attempt,
        }
        if run is not None:
            tracking.log_to_run(run, {k: v for k, v in result.items() if not k.startswith("train/")} | ev["settings"])
            steps = {k: v for k, v in train_metrics.items() if k in ("train_steps", "resumed_from_step")}
            tracking.log_to_run(run, steps)
            tracking.tag_run(
                run,
                {"eval_trials_hash": ev["trials_hash"], "adapter_dir": str(adapter), "eval_dir": str(tdir / "eval")},
            )
            tracking.log_artifacts_to_run(run, adapter / "training.json", tdir / "eval" / "report" / "summary.csv")
            tracking.end_run(run, "FINISHED")
        result |= {
            "condition": spec.label,
            "seed": spec.seed,
            "variant": spec.variant,
            "eval_trials_hash": ev["trials_hash"],
            "adapter_dir": str(adapter),
            "mlflow_run_id": run.run_id if run else "",
        }
        store.save_result(tdir / RESULT_FILE, _settings(cfg, spec), result)
        shutil.rmtree(tdir / CHECKPOINTS, ignore_errors=True)  # the trial is stored: nothing left to resume
        return result
    except BaseException as e:
        if run is not None:
            try:
                tracking.tag_run(run, {"error": f"{type(e).__name__}: {e}"[:4000]})
                tracking.end_run(run, "FAILED")
            except Exception:  # never hide the trial's own error
                traceback.print_exc()
        raise


def _train_local(
    cfg: AblationConfig,
    spec: TrialSpec,
    cond: Condition,
    lora: LoraSettings,
    hp: TrainHParams,
    adapter: Path,
    run: tracking.RunRef | None,
) -> dict[str, float]:
    from lab.model.loading import load, threads

    threads(cfg.resources.threads)
    lm = load(cfg.model)
    res = fit_adapter(cfg, spec, (cond, lora, hp), lm, adapter, run, deepspeed=cfg.deepspeed)
    del lm
    return dict(res.metrics)
