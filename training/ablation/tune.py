"""The DPO-component ablation as Ray Tune trials: the `tune.Tuner` over `search_space(cfg)`.

The pieces live by concern: the config and search space in `training.ablation.tune_config`, one trial (train, evaluate, MLflow
child run, attempt counting) in `training.ablation.trial`, the multi-worker Ray Train + DeepSpeed path in
`training.ablation.distributed`. Tune reserves `resources.cpus/gpus` per trial (`workers` = 1) or 1 driver CPU (`workers` > 1:
Ray Train schedules the workers itself), runs `max_concurrent_trials` at once and retries a failed trial
`max_failures` times.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab.config import from_dict, to_dict
from training.ablation.trial import run_trial
from training.ablation.tune_config import AblationConfig, search_space, spec_from_config


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
        fn,
        param_space=search_space(cfg),
        tune_config=tune.TuneConfig(
            max_concurrent_trials=r.max_concurrent_trials,
            num_samples=1,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=name or f"ablations-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(Path(cfg.output_dir) / "tune"),
            failure_config=tune.FailureConfig(max_failures=r.max_failures),
            verbose=1,
        ),
    )
