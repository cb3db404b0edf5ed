"""Activation patching after the injection layer: `python -m jobs.patching --config configs/patching-demo.yaml`.

Knock-out, knock-in and forced knock-out of `attn_out` / `mlp_out` at each patched layer (lab/experiments/patching.py), one Ray
actor task per batch × layer × component (or in process with `runner.num_actors: 0`). Rows go to
<output_dir>/patching/ as Parquet shards keyed by trial id (resumable); the report is the effect per layer and
component with 95 % intervals across concepts (analysis/patching.py), a plot and one MLflow run.
"""

from __future__ import annotations

from pathlib import Path

from jobs.cli import configure, entry
from lab.experiments.patching_plan import PatchingConfig, plan, run_cells


@entry
def main(argv: list[str] | None = None) -> int:
    """Run the patching grid of --config; exit 0 on success, 2 on bad input."""
    import time

    from analysis import patching as ap
    from lab.config import flatten, to_dict
    from lab.model import loading
    from lab.reporting import report
    from lab.run import store

    cfg, _ = configure(PatchingConfig, __doc__, argv)
    t0 = time.time()
    loading.threads(cfg.runner.threads)
    lm = loading.load(cfg.model)
    batches, layers, tasks = plan(cfg, lm)
    out = Path(cfg.output_dir) / "patching"
    done = store.finished_ids(out)
    todo = [t for t in tasks if not set(t[3]) <= done]
    sites = [f"{c}.{p}" for p in layers for c in cfg.components]
    fields = {"model": cfg.model.name, "strength": cfg.strength, "strength_mode": cfg.strength_mode}
    print(
        f"patching: {len(tasks)} tasks ({len(batches)} batches × {len(layers)} layers × {len(cfg.components)} "
        f"components), {len(tasks) - len(todo)} already stored"
    )
    run_cells(cfg, lm, batches, todo, out, sites, fields)
    rep = Path(cfg.output_dir) / "report"
    table, inj, png = ap.report(
        store.read(out), rep, f"{cfg.model.name}: patching after injection at layer {cfg.layer}"
    )
    run_id = report.log_run(
        cfg.tracking,
        flatten(to_dict(cfg)),
        inj,
        [rep / "patching_effects.csv", png],
        tags={"job": "patching", "model": cfg.model.name},
        run_name=cfg.tracking.run_name or f"patching {cfg.model.name} L{cfg.layer}",
        stepped=[(r.patch_layer, {f"{r.mode}/{r.component}/effect": r.effect}) for r in table.itertuples()],
    )
    report.announce(run_id, cfg.tracking)
    print(f"report:  {png.resolve()}  [{time.time() - t0:.0f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
