"""Log a stored run to MLflow after the fact: `python -m jobs.sync_mlflow --run <results dir>`.

Parquet is the source of truth: a sweep whose tracking server was down (or that ran with tracking off) loses
nothing, and this job logs the same rates, per-setting metrics and report files a live run would have, with the
config the sweep saved beside its shards (`config.yaml`) as params.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jobs.cli import Job, bare_parser, begin
from lab.config import from_dict, load_yaml
from lab.errors import LabError
from lab.experiments.concept_injection import InjectionConfig
from lab.reporting import report
from lab.run import store
from lab.run.tracking import TrackingConfig, resolve_uri


def main(argv: list[str] | None = None) -> int:
    """Log the run stored in --run; exit 0, or 2 on bad input."""
    with Job(__name__, argv) as job:
        from lab.run.preflight import check_tracking, user_path, user_uri

        ap = bare_parser(__doc__.splitlines()[0])
        ap.add_argument("--run", required=True, help="results directory of a sweep (Parquet shards + config.yaml)")
        ap.add_argument("--tracking-uri", help="MLflow URI (default: the config's, $MLFLOW_TRACKING_URI or sqlite)")
        ap.add_argument("--experiment", help="MLflow experiment (default: the config's)")
        args = ap.parse_args(argv)
        out = Path(user_path(args.run, "--run"))
        saved = out / store.CONFIG_FILE
        if not saved.is_file():
            raise LabError(f"{out} has no {store.CONFIG_FILE} (not a sweep's results directory?)")
        cfg = from_dict(InjectionConfig, load_yaml(saved))
        track = TrackingConfig(
            uri=user_uri(args.tracking_uri or cfg.tracking.uri or resolve_uri(cfg.tracking)),
            experiment=args.experiment or cfg.tracking.experiment,
            run_name=cfg.tracking.run_name,
        )
        check_tracking(track)
        df = store.read(out)
        if args.dry_run:
            print(f"dry run: {len(df)} stored trials in {out.resolve()} would be logged (judge {cfg.judge.name})")
            return 0
        synced = dataclasses.replace(cfg, output_dir=str(out), tracking=track)
        begin(synced, str(out.resolve()))
        print(f"stored run {out.resolve()}: {len(df)} trials in {len(store.shard_files(out))} shards")
        report.report_config(df, synced, "concept_injection", "concept injection", {"synced_from": str(out.resolve())})
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
