"""Concept-injection sweep (Lindsey 2025): `python -m jobs.concept_injection --config configs/demo.yaml`.

Runs the same locally and under `ray job submit`. Writes a Parquet dataset, a report (CSV + heatmap PNG) and one
MLflow run, and prints a summary table with the paths it wrote.
"""

from __future__ import annotations

from pathlib import Path

from jobs.cli import entry, load_config, parser
from lab import calibration, report, store
from lab.config import flatten, to_dict
from lab.experiment import preflight
from lab.sweep import InjectionConfig, run_sweep


@entry
def main(argv: list[str] | None = None) -> int:
    """Run the sweep described by --config; exit 0 on success, 2 on bad input."""
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(InjectionConfig, args)
    preflight(cfg.tracking, cfg.runner.address, cfg.output_dir)
    cal = calibration.for_judge(cfg.judge)  # graded before the sweep: a chance-level judge stops here
    if cal:
        print(f"judge calibration ({cfg.judge.calibration}): {calibration.describe(cal)}")
    res = run_sweep(cfg, progress=not args.quiet)
    store.save_config(cfg.output_dir, to_dict(cfg))  # Parquet + this config are the run: jobs.sync_mlflow relogs it
    print(f"trials: {res['total']} ({res['new']} generated now, {res['skipped']} already stored) judge: {res['judge']}")
    ids = {t.trial_id for t in res["plan"].trials}
    df = store.read(cfg.output_dir)
    report.report_rates(
        df[df["trial_id"].isin(ids)],
        cfg.output_dir,
        cfg.tracking,
        flatten(to_dict(cfg)),
        title=f"{cfg.model.name}: concept injection",
        tags={"job": "concept_injection", "model": cfg.model.name},
        calibration=cal,
    )
    print(f"results: {Path(cfg.output_dir).resolve()} (Parquet, {len(store.shard_files(cfg.output_dir))} shards)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
