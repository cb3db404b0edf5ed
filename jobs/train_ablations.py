"""DPO-component ablation: `python -m jobs.train_ablations --config configs/ablations-demo.yaml`.

Conditions × seeds (× an optional hyper-parameter grid) run as Ray Tune trials (training.ablation.tune, training.ablation.trial): each
trains a LoRA adapter and evaluates it with concept vectors re-extracted from the adapted model, on the same trials
for every condition. MLflow: one parent run (config, comparison CSV, TPR/FPR/introspection plot with 95 % intervals,
failed trials) and one child run per trial (condition/domain/seed tags, training curve, rates with Wilson bounds). A
failed trial is retried `resources.max_failures` times; one that still fails is printed, tagged `failed_trials` on
the parent run, listed in failed_trials.json and kept as a `failed` row in the comparison (never silently missing);
the job then exits 3 after writing everything. Runs locally (Ray on loopback) and under `ray job submit`.
"""

from __future__ import annotations

import time
from pathlib import Path

from jobs.cli import Job, configure
from lab.errors import LabError
from training.ablation.ablation_report import collect_results, log_parent, parent, print_report, report_ablation
from training.ablation.tune_config import AblationConfig, absolutize, expected_trials

EXIT_TRIALS_FAILED = 3


def main(argv: list[str] | None = None) -> int:
    """Run every trial of --config; exit 0 when all finished, 3 when some failed (reported), 2 on bad input."""
    with Job(__name__, argv) as job:
        from lab.config import flatten, to_dict
        from lab.run import parallel, tracking
        from training.ablation.trial import clear_attempts, stored_result
        from training.ablation.tune import fit_trials

        cfg, _ = configure(AblationConfig, __doc__, argv, plan=expected_trials, check=check_inputs)
        cfg = absolutize(cfg)
        trials = expected_trials(cfg)
        print(
            f"ablation: {len(trials)} trials ({len(cfg.conditions)} conditions × {len(cfg.seeds)} seeds"
            + (f" × grid {', '.join(cfg.grid)}" if cfg.grid else "")
            + f"), model {cfg.model.name}, "
            f"{'TorchTrainer x' + str(cfg.resources.workers) if cfg.resources.distributed else 'in-process'} trials, "
            f"≤ {cfg.resources.max_concurrent_trials} at once, {cfg.resources.max_failures} retries each"
        )
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        stored = sum(stored_result(cfg, t) is not None for t in trials)
        if stored:
            print(f"{stored} of {len(trials)} trials already stored (adapter + evaluation): not trained again")
        clear_attempts(cfg)
        t0 = time.time()
        with (
            parallel.ray_session(cfg.address, cfg.ray_cpus),
            parent(cfg, flatten(to_dict(cfg)), stored == len(trials)) as run,
        ):
            parent_id = run.info.run_id if run is not None else None
            grid = fit_trials(cfg, parent_id)
            records = collect_results(cfg, trials, grid)
            elapsed = time.time() - t0
            table, pooled, failed, paths = report_ablation(cfg, records)
            if run is not None:
                log_parent(pooled, failed, paths, elapsed)
        print_report(pooled, failed)
        print(f"report:  {paths[0].parent}  ({', '.join(p.name for p in paths)})")
        if parent_id:
            print(
                f"mlflow:  parent run {parent_id} ({sum(r['status'] == 'finished' for r in records)} finished child "
                f"runs) in experiment '{cfg.tracking.experiment}' at {tracking.resolve_uri(cfg.tracking)}"
            )
        print(f"elapsed: {elapsed:.0f} s")
        if failed:
            print(
                f"error: {len(failed)} of {len(records)} trials failed after retries: "
                + ", ".join(f["trial"] for f in failed)
            )
            return EXIT_TRIALS_FAILED
    return job.code


def check_inputs(cfg: AblationConfig) -> None:
    """One-line errors before any work: conditions, model/layers/judge, data, DeepSpeed file (jobs.cli.configure then
    checks paths, MLflow, Ray and the output folder)."""
    from training.ablation.evaluate import check
    from training.lora.ds_config import deepspeed_config

    check(cfg.model, cfg.evaluation)
    if cfg.data.path and not Path(cfg.data.path).exists():
        raise LabError(f"preference data not found: {cfg.data.path}")
    deepspeed_config(cfg.deepspeed)
    if cfg.deepspeed and not cfg.resources.distributed and cfg.resources.gpus < 1:
        raise LabError("deepspeed needs resources.workers > 1 (a Ray Train TorchTrainer per trial) or a GPU")


if __name__ == "__main__":
    raise SystemExit(main())
