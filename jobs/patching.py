"""Activation patching after the injection layer: `python -m jobs.patching --config configs/patching-demo.yaml`.

Knock-out, knock-in and forced knock-out of `attn_out` / `mlp_out` at each patched layer (lab/experiments/patching.py),
run by `lab.run.experiment.execute` like every experiment: shards of whole batch × layer × component cells on Ray
actors (or in process with `runner.num_actors: 0`); the driver loads no model. Rows go to <output_dir>/patching/ as
Parquet shards keyed by trial id (resumable); the report is the effect per layer and component with 95 % intervals
across concepts (analysis/patching.py), a plot and one MLflow run.
"""

from __future__ import annotations

from pathlib import Path

from jobs.cli import Job, configure
from lab.experiments.patching import PatchingConfig, plan, prepare, work


def main(argv: list[str] | None = None) -> int:
    """Run the patching grid of --config; exit 0 on success, 2 on bad input."""
    with Job(__name__, argv) as job:
        import time

        from analysis import patching as ap
        from lab.config import flatten, to_dict
        from lab.model.embedded import default_cache_dir, ensure_converted
        from lab.model.loading import spec_for
        from lab.reporting import report
        from lab.run import store
        from lab.run.experiment import execute

        rerun = "python -m analysis.patching --run {output}"
        cfg, args = configure(PatchingConfig, __doc__, argv, plan=lambda c: plan(c).trials, rerun=rerun)
        t0 = time.time()
        p = plan(cfg)  # trial ids and layers from the config and the model's registry entry: no model in the driver
        out = Path(cfg.output_dir) / "patching"
        done, cells = store.finished_ids(out), {}
        for t in p.trials:
            cells.setdefault((t.batch, t.patch_layer, t.component), []).append(t.trial_id in done)
        print(
            f"patching: {len(cells)} tasks ({len(p.batches)} batches × {len(p.layers)} layers × "
            f"{len(cfg.components)} components), {sum(map(all, cells.values()))} already stored"
        )
        spec = spec_for(cfg.model.name)
        if spec is not None and spec.source == "embedded":
            ensure_converted(cfg.model.cache_dir, cfg.model.name)  # once, here, not in every replica at once
        # ZeRO-3 ranks must run the same forwards: no on-disk cache that one rank could hit and another miss
        cache = (cfg.cache_dir or str(default_cache_dir() / "vectors")) if cfg.model.shard == "none" else None
        execute(
            p.trials,
            out,
            cfg.model,
            cfg.runner,
            work,
            prepare,
            (cfg, p.layers, p.batches, cache),
            progress=not args.quiet,
            desc="patching rows",
            shard_key=lambda t: t.shard,
        )
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
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
