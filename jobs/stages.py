"""Training stages: `python -m jobs.stages --config configs/stages-demo.yaml`.

Evaluates a list of checkpoints (registry name, local HF dir or hub id, optionally with a LoRA adapter) with the same
trials: concept vectors are re-extracted from each checkpoint (the activation cache is keyed by model + adapter), each
stage has its own Parquet dataset under <output_dir>/<stage> (trial ids do not include the adapter), and one pool
of Ray actors per stage. Draws TPR vs FPR per stage with 95 % intervals; MLflow: one parent run, one child per stage
with the same metric names.

A stage whose `model.adapter` does not exist fails up front, unless `create_adapter: true`: then an *untrained*
random LoRA (non-zero B, ‖ΔW‖/‖W‖ = `adapter_delta_rel` per layer; the paper's random-LoRA control) is written there
first — with `training.lora.trainer.train("random_lora", …)` when the trainer is importable, else with PEFT directly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jobs.cli import Job, configure
from lab.experiments.stages import StagesConfig, check_stage


def main(argv: list[str] | None = None) -> int:
    """Evaluate every stage of --config with the same trials; exit 0 on success, 2 on bad input."""
    with Job(__name__, argv) as job:
        import time

        from lab.config import flatten, to_dict
        from lab.experiments.concept_injection import run_sweep
        from lab.reporting import comparison
        from lab.run import parallel, store
        from training.lora.random_adapter import create_random_adapter

        def planned(c: StagesConfig) -> tuple[int, str]:
            return sum(len(check_stage(c, s).trials) for s in c.stages), f"trials over {len(c.stages)} stages"

        cfg, args = configure(StagesConfig, __doc__, argv, plan=planned, check=planned)
        for s in cfg.stages:
            model = cfg.injection(s).model
            if model.adapter and not (Path(model.adapter) / "adapter_config.json").is_file():
                print(create_random_adapter(dataclasses.replace(s, model=model)))
        # plan after the adapters exist: trial ids carry the adapter's fingerprint
        # (lab.experiments.concept_injection.model_key)
        plans = {s.name: check_stage(cfg, s) for s in cfg.stages}
        groups = {}
        with parallel.ray_session(cfg.runner.address, max(cfg.runner.cpus_per_actor * cfg.runner.num_actors, 1)):
            for s in cfg.stages:  # one Ray for every stage; each stage still gets its own pool
                t0 = time.time()
                res = run_sweep(cfg.injection(s), progress=not args.quiet)
                ckpt = cfg.checkpoint(s)
                adapter = f" + adapter {ckpt.adapter}" if ckpt.adapter else ""
                print(
                    f"stage {s.name} ({ckpt.name}{adapter}): {res['total']} trials ({res['new']} generated now, "
                    f"{res['skipped']} already stored) judge: {res['judge']} [{time.time() - t0:.0f} s]"
                )
                df = store.read(cfg.injection(s).output_dir)
                groups[s.name] = df[df["trial_id"].isin({t.trial_id for t in plans[s.name].trials})]
        comparison.compare(
            groups,
            cfg.output_dir,
            cfg.tracking,
            flatten(to_dict(cfg)),
            "rates per stage",
            label="stage",
            child_params={s.name: flatten(to_dict(cfg.injection(s))) for s in cfg.stages},
            child_tags={
                s.name: {
                    "job": "stages",
                    "model": cfg.checkpoint(s).name,
                    "adapter": cfg.injection(s).model.adapter or "",
                }
                for s in cfg.stages
            },
            tags={"job": "stages"},
            run_name=cfg.tracking.run_name or "stages",
        )
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
