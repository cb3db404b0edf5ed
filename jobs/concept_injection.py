"""Concept-injection sweep (Lindsey 2025): `python -m jobs.concept_injection --config configs/demo.yaml`.

Runs the same locally and under `ray job submit`. Writes a Parquet dataset, a report (CSV + heatmap PNG) and one
MLflow run, and prints a summary table with the paths it wrote.
"""

from __future__ import annotations

from pathlib import Path

from jobs.cli import Job, configure
from lab.config import to_dict
from lab.experiments.concept_injection import InjectionConfig, judged_sweep, plan
from lab.reporting import report
from lab.run import store


def main(argv: list[str] | None = None) -> int:
    """Run the sweep described by --config; exit 0 on success, 2 on bad input."""
    with Job(__name__, argv) as job:
        cfg, args = configure(InjectionConfig, __doc__, argv, plan=lambda c: plan(c).trials)
        _, df, cal = judged_sweep(cfg, quiet=args.quiet)
        store.save_config(cfg.output_dir, to_dict(cfg))  # Parquet + this config are the run: jobs.sync_mlflow relogs it
        report.report_config(df, cfg, "concept_injection", "concept injection", calibration=cal)
        print(f"results: {Path(cfg.output_dir).resolve()} (Parquet, {len(store.shard_files(cfg.output_dir))} shards)")
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
