"""Concept-injection sweep (Lindsey 2025): `python -m jobs.concept_injection --config configs/demo.yaml`.

Runs the same locally and under `ray job submit`. Writes a Parquet dataset, a report (CSV + heatmap PNG) and one
MLflow run, and prints a summary table with the paths it wrote.
"""

from __future__ import annotations

from pathlib import Path

from jobs.cli import entry, load_config, parser
from lab.config import to_dict
from lab.experiments.concept_injection import InjectionConfig, judged_sweep
from lab.reporting import report
from lab.run import store
from lab.run.experiment import preflight


@entry
def main(argv: list[str] | None = None) -> int:
    """Run the sweep described by --config; exit 0 on success, 2 on bad input."""
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(InjectionConfig, args)
    preflight(cfg.tracking, cfg.runner.address, cfg.output_dir)
    _, df, cal = judged_sweep(cfg, quiet=args.quiet)
    store.save_config(cfg.output_dir, to_dict(cfg))  # Parquet + this config are the run: jobs.sync_mlflow relogs it
    report.report_config(df, cfg, "concept_injection", "concept injection", calibration=cal)
    print(f"results: {Path(cfg.output_dir).resolve()} (Parquet, {len(store.shard_files(cfg.output_dir))} shards)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
