"""Robustness grid: `python -m jobs.robustness --config configs/robustness-demo.yaml`.

Runs prompt variants × dialogue formats (lab/data/prompts.yaml; `layout: paper` = the paper's 7 variants in the
standard format and its 6 formats with the original variant, `cross` = every pair) with the same concepts, layers,
strengths and paired controls in every cell. All cells go to one Parquet dataset (trial ids carry the variant and
format, so cells never collide, and a rerun skips what is stored) and one pool of Ray actors. A format that cannot
apply to the model (a chat format on a model without a chat template, a role order the template refuses) is
reported as skipped.

MLflow: one parent run (config, cell table, grid plot of TPR/FPR with 95 % intervals) and one child run per applied
(variant, format) cell, all children with the same metric names (tpr, fpr, introspection, …) so they compare in the UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.cli import Job, configure
from lab.errors import LabError
from lab.experiments import robustness
from lab.experiments.robustness import RobustnessConfig
from lab.protocol.trials import Trial


def main(argv: list[str] | None = None) -> int:
    """Run the variant × format grid of --config; exit 0 on success, 2 on bad input."""
    with Job(__name__, argv) as job:
        import time

        from lab.experiments.concept_injection import plan, run_sweep

        def planned(c: RobustnessConfig) -> tuple[int, str]:
            n = sum(len(plan(c.injection(v, f)).trials) for v, f in c.cells())
            return n, f"trials over {len(c.cells())} cells (a cell the model's template refuses is skipped when run)"

        cfg, args = configure(RobustnessConfig, __doc__, argv, plan=planned)
        base = cfg.injection()
        t0 = time.time()
        reasons = robustness.skip_reasons(
            cfg.model, cfg.cells(), cfg.sweep.trials_per_concept, cfg.sweep.forced_identification
        )
        trials: list[Trial] = []
        cell_ids: dict[robustness.GridCell, list[str]] = {}
        for (v, f), reason in reasons.items():
            if reason is None:
                ts = plan(cfg.injection(v, f)).trials
                cell_ids[(v, f)] = [t.trial_id for t in ts]
                trials.extend(ts)
            else:
                print(f"skipped: {v} × {f}: {reason}")
        if not trials:
            raise LabError("no (variant, format) cell applies to this model; nothing to run")
        res = run_sweep(base, progress=not args.quiet, trials=trials)
        print(
            f"cells: {len(cell_ids)} run, {len(reasons) - len(cell_ids)} skipped; trials: {res['total']} "
            f"({res['new']} generated now, {res['skipped']} already stored) judge: {res['judge']} "
            f"[{time.time() - t0:.0f} s]"
        )
        report_grid(cfg, reasons, cell_ids)
    return job.code


def report_grid(
    cfg: RobustnessConfig,
    reasons: dict[robustness.GridCell, str | None],
    cell_ids: dict[robustness.GridCell, list[str]],
) -> Any:
    """cells.csv + grid plot in <output_dir>/report, the MLflow parent/child runs (lab.reporting.report), a printed grid."""
    from lab.config import flatten, to_dict
    from lab.reporting import plots, report
    from lab.run import store, tracking

    table = robustness.cell_table(store.read(cfg.output_dir), reasons, cell_ids)
    rep = Path(cfg.output_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    csv, png = rep / "cells.csv", rep / "grid.png"
    table.to_csv(csv, index=False)
    rows, cols = list(dict.fromkeys(v for v, _ in reasons)), list(dict.fromkeys(f for _, f in reasons))
    shown = ["tpr", "fpr"] + [f"{c}_rate" for c in cfg.sweep.controls][:1]
    plots.category_grid(
        table,
        "prompt_variant",
        "dialogue_format",
        png,
        metrics=shown,
        rows=rows,
        cols=cols,
        title=f"{cfg.model.name}: prompt variant × dialogue format",
    )
    ok, skipped = table[table["status"] == "ok"], table[table["status"] != "ok"]
    tags = {"job": "robustness", "model": cfg.model.name}
    skipped_tag = "; ".join(f"{a}×{b}" for a, b in zip(skipped["prompt_variant"], skipped["dialogue_format"]))
    with report.parent_run(
        cfg.tracking,
        flatten(to_dict(cfg)),
        tags=tags | {"skipped_cells": skipped_tag or "none"},
        run_name=cfg.tracking.run_name or f"robustness {cfg.model.name}",
    ) as parent_id:
        for _, r in ok.iterrows():
            v, f = r["prompt_variant"], r["dialogue_format"]
            report.log_run(
                cfg.tracking,
                flatten(to_dict(cfg.injection(v, f))),
                robustness.child_metrics(r.to_dict(), cfg.sweep.controls, cfg.sweep.forced_identification),
                tags=tags | {"prompt_variant": v, "dialogue_format": f},
                run_name=f"{v} × {f}",
                parent_run_id=parent_id,
            )
        if parent_id:
            tracking.log_metrics({"cells_run": len(ok), "cells_skipped": len(skipped)})
            tracking.log_artifacts(csv, png)
    print(robustness.format_grid(table, shown))
    print(f"results: {Path(cfg.output_dir).resolve()}")
    print(f"report:  {csv.resolve()}  {png.resolve()}")
    if parent_id:
        print(
            f"mlflow:  parent run {parent_id} ({len(ok)} child runs) in experiment '{cfg.tracking.experiment}' "
            f"at {tracking.resolve_uri(cfg.tracking)}"
        )
    return table


if __name__ == "__main__":
    raise SystemExit(main())
