"""Re-judge stored generations: `python -m jobs.regrade --run <parquet dir | MLflow run id> --judge <YAML | name>`.

Reads the sweep's Parquet shards (for an MLflow run id: the run's `output_dir` param), grades every stored response
with the new judge, and writes the verdicts beside the originals in `<dir>/verdicts/<name>/shard-*.parquet` (keyed
by trial_id; the original shards are never touched; a rerun skips trials already regraded). `<name>` is the judge's
registry name, plus a hash of its options when it has any (or `--name`); `judge.json` there records the config, and
a different config never mixes into the same directory. Logs an MLflow run tagged `source_run_id` with the new rates
and the agreement, and prints Cohen's kappa and a confusion table per field (source judge vs new judge).
"""

from __future__ import annotations

import re

from jobs.cli import Job, bare_parser, begin
from lab.errors import LabError
from lab.experiments.regrade import judge_spec, manifest, regrade, regrade_report, verdict_name
from lab.judges import make_judge
from lab.run.tracking import resolve_source


def main(argv: list[str] | None = None) -> int:
    """Regrade, print agreement, log an MLflow run; exit 0, or 2 on bad input."""
    with Job(__name__, argv) as job:
        from lab.run import store, tracking
        from lab.run.preflight import check_tracking, user_path, user_uri, writable

        ap = bare_parser(__doc__.splitlines()[0])
        ap.add_argument("--run", required=True, help="Parquet results directory or MLflow run id of a sweep")
        ap.add_argument("--judge", required=True, help="judge registry name or YAML config (name + options)")
        ap.add_argument("--name", help="verdict directory name under <dir>/verdicts/ (default: from the judge config)")
        ap.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
        ap.add_argument("--experiment", default="regrade", help="MLflow experiment when --run is a directory")
        ap.add_argument("--chunk", type=int, default=64, help="trials per verdict shard")
        ap.add_argument("--no-tracking", action="store_true", help="do not log an MLflow run")
        args = ap.parse_args(argv)
        if args.chunk < 1:
            raise LabError("--chunk must be >= 1")
        uri = user_uri(args.tracking_uri or tracking.resolve_uri(tracking.TrackingConfig()))
        source = resolve_source(
            args.run if re.fullmatch(r"[0-9a-f]{32}", args.run) else user_path(args.run, "--run"), uri
        )
        cfg = tracking.TrackingConfig(
            uri=uri, experiment=source.experiment or args.experiment, enabled=not args.no_tracking
        )
        if cfg.enabled:
            tracking.check_uri(tracking.resolve_uri(cfg))
            check_tracking(cfg)
        old = store.read(source.directory)
        name, options = judge_spec(args.judge)
        vname = args.name or verdict_name(name, options)
        if not re.fullmatch(r"[A-Za-z0-9][\w.@+-]*", vname):
            raise LabError(f"verdict directory name '{vname}' must be letters, digits and ._@+- only")
        vdir = writable(source.directory / "verdicts" / vname, "verdict folder")
        if args.dry_run:
            print(
                f"dry run: {len(old)} stored trials in {source.directory} would be regraded by judge {name} into {vdir}"
            )
            return 0
        begin(cfg, str(vdir))
        judge = make_judge(name, **options)
        manifest(vdir, judge, options)
        counts = regrade(old, judge, vdir, args.chunk)
        new = store.read(vdir)
        new = new[new["trial_id"].isin(set(old["trial_id"]))]
        text, logged = regrade_report(source, old, new, judge, vdir, counts)
        print(text)
        if cfg.enabled:
            params = {
                "source_dir": str(source.directory.resolve()),
                "source_run_id": source.run_id or "",
                "verdict_dir": str(vdir.resolve()),
                "judge.name": name,
                "judge.version": judge.version,
                **{f"judge.options.{k}": v for k, v in options.items()},
            }
            tags = {
                "source_run_id": source.run_id or "",
                "source_dir": str(source.directory.resolve()),
                "judge": judge.name,
                "judge_version": judge.version,
                "job": "regrade",
            }
            with tracking.run(cfg, params, tags=tags, run_name=f"regrade-{vname}") as active:
                tracking.log_metrics(logged)
                tracking.log_text(text + "\n", "agreement.txt")
            print(f"mlflow:  run {active.info.run_id} in experiment '{cfg.experiment}' at {tracking.resolve_uri(cfg)}")
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
