"""Trained bias vector, held-out concepts: `python -m jobs.steering_vector --config configs/steering-vector-demo.yaml`.

A Ray Tune grid (training/bias/bias_tune.py): `baseline` (no bias) and one trial per bias layer × seed, each training a
zero-initialised bias on the 400 training-side concepts of the stored split and evaluating it on the held-out ones
with held-out injections, random / norm-matched vector injections and no-injection controls. Report (recomputed from
the stored Parquet, as `python -m analysis.bias_guards --run <output_dir>` does): comparison.csv, before_after.png,
per_layer.png, verdict.txt; MLflow: a parent run and one child per arm (its rates, the baseline's as `before/*`, the
verdict flags). The verdict says whether a gain is concept-specific or the bias made a perturbation detector.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack
from pathlib import Path

from jobs.cli import Job, configure
from training.bias.bias_tune import SteeringVectorConfig, arms, stored_arm, with_absolute_paths


def main(argv: list[str] | None = None) -> int:
    """Train and evaluate every arm of --config; exit 0, 3 when an arm failed, 2 on bad input."""
    with Job(__name__, argv) as job:
        from analysis.bias_guards import comparison, load_rates, verdict
        from analysis.bias_report import SHOWN, write_report
        from lab.config import flatten, to_dict
        from lab.run import parallel, provenance, tracking
        from training.bias.bias_tune import annotate_children, fit_arms
        from training.bias.examples import stored_split

        rerun = "python -m analysis.bias_guards --run {output}"
        cfg, _ = configure(
            SteeringVectorConfig, __doc__, argv, plan=lambda c: (len(arms(c)), "arms (Ray Tune trials)"), rerun=rerun
        )
        cfg = with_absolute_paths(cfg)
        split = stored_split(cfg.bias.split_seed)
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "split.json").write_text(
            json.dumps(
                split.to_dict() | {"heldout_evaluated": list(split.heldout[: cfg.evaluation.n_heldout])}, indent=1
            )
        )
        plan = arms(cfg)
        print(
            f"steering vector: {len(plan)} arms ({', '.join(plan)}), model {cfg.model.name}, bias at "
            f"{cfg.bias.site}, held-out concepts {cfg.evaluation.n_heldout} of {len(split.heldout)} (split seed "
            f"{split.seed}; {len(split.train)} train / {len(split.val)} val)"
        )
        stored = [a for a in plan if stored_arm(cfg, a) is not None]
        if stored:
            print(f"{len(stored)} of {len(plan)} arms already stored, not trained again: {', '.join(stored)}")
        t0 = time.time()
        with ExitStack() as stack:
            stack.enter_context(parallel.ray_session(cfg.address, cfg.ray_cpus))
            parent = (
                stack.enter_context(
                    tracking.run(
                        cfg.tracking,
                        flatten(to_dict(cfg)),
                        provenance.tags(flatten(to_dict(cfg))) | {"job": "steering_vector", "model": cfg.model.name},
                        run_name=cfg.tracking.run_name or "steering-vector",
                        reuse=len(stored) == len(plan),  # a rerun that adds nothing: the same parent run
                    )
                )
                if cfg.tracking.enabled
                else None
            )
            grid = fit_arms(cfg, parent.info.run_id if parent else None)
            failed = [r.config.get("arm", "?") for r in grid if r.error is not None]
            run_ids = {r.metrics.get("arm"): r.metrics.get("mlflow_run_id") for r in grid if r.error is None}
            rates, _ = load_rates(out)
            meta = {a: {k: str(v) for k, v in m.items()} for a, m in plan.items()}
            table = comparison(rates, meta)
            verdicts = {a: verdict(rates.get("baseline", {}), r) for a, r in rates.items() if a != "baseline"}
            paths = write_report(
                cfg.model.name, cfg.bias.site, cfg.evaluation.n_heldout, table, verdicts, out / "report"
            )
            if parent:
                tracking.log_metrics(
                    {f"{a}/{m}": r.get(m, math.nan) for a, r in rates.items() for m in SHOWN}
                    | {"elapsed_seconds": time.time() - t0, "n_failed_arms": len(failed)}
                )
                tracking.log_artifacts(*paths)
                annotate_children(cfg, run_ids, rates.get("baseline", {}), verdicts)
        print(paths[-1].read_text())
        print(f"report:  {paths[0].parent}  ({', '.join(p.name for p in paths)})")
        if parent:
            print(f"mlflow:  parent run {parent.info.run_id} in '{cfg.tracking.experiment}' at {cfg.tracking.uri}")
        print(f"elapsed: {time.time() - t0:.0f} s")
        if failed:
            print(f"error: arms failed: {', '.join(failed)}")
            return 3
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
