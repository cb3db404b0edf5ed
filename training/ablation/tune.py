"""The DPO-component ablation as Ray Tune trials: the grid over `search_space(cfg)` (built and run by
`lab.run.parallel.tune_grid`, the one Tune builder).

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


def trial_trainable(config: dict[str, Any], job: dict[str, Any], parent_run_id: str | None) -> None:
    """The Tune function trial_trainable: one (condition, seed[, grid point]) per trial; reports once, at the end."""
    from ray import tune

    cfg = from_dict(AblationConfig, job)
    tune.report(run_trial(cfg, spec_from_config(cfg, config), parent_run_id))


def fit_trials(cfg: AblationConfig, parent_run_id: str | None, name: str | None = None) -> Any:
    """Every trial of `search_space(cfg)` with per-trial resources, concurrency and retries from the config; the
    `tune.ResultGrid`."""
    from lab.run.parallel import tune_grid

    r = cfg.resources
    return tune_grid(
        trial_trainable,
        search_space(cfg),
        Path(cfg.output_dir) / "tune",
        name or f"ablations-{time.strftime('%Y%m%d-%H%M%S')}",
        resources={"cpu": r.cpus, "gpu": 0.0} if r.distributed else {"cpu": r.cpus, "gpu": r.gpus},
        params={"job": to_dict(cfg), "parent_run_id": parent_run_id},
        address=cfg.address,
        num_cpus=cfg.ray_cpus,
        max_concurrent=r.max_concurrent_trials,
        max_failures=r.max_failures,
        trial_name=lambda c: spec_from_config(cfg, c).key,
        verbose=1,
    )
