"""Re-judge stored generations: `python -m jobs.regrade --run <parquet dir | MLflow run id> --judge <YAML | name>`.

Reads the sweep's Parquet shards (for an MLflow run id: the run's `output_dir` param), grades every stored response
with the new judge, and writes the verdicts beside the originals in `<dir>/verdicts/<name>/shard-*.parquet` (keyed
by trial_id; the original shards are never touched; a rerun skips trials already regraded). `<name>` is the judge's
registry name, plus a hash of its options when it has any (or `--name`); `judge.json` there records the config, and
a different config never mixes into the same directory. Logs an MLflow run tagged `source_run_id` with the new rates
and the agreement, and prints Cohen's kappa and a confusion table per field (source judge vs new judge).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.cli import entry
from lab.config import load_yaml
from lab.errors import LabError
from lab.judges import Answer, Judge, make_judge
from lab.judges.agreement import Confusion, accuracy, cohen_kappa, confusion, format_confusion

VERDICT_COLUMNS = ("detected", "identified", "coherent", "reason", "judge", "judge_version", "parse_error")
NEEDED = ("trial_id", "concept", "response", "forced")


@dataclass(frozen=True)
class Source:
    directory: Path
    run_id: str | None = None
    experiment: str | None = None


def resolve_source(run: str, tracking_uri: str | None = None) -> Source:
    """A directory of shards, or an MLflow run id whose `output_dir` param names one."""
    if Path(run).is_dir():
        return Source(Path(run))
    if not re.fullmatch(r"[0-9a-f]{32}", run):
        raise LabError(f"--run '{run}' is neither a directory of Parquet shards nor an MLflow run id")
    import mlflow
    from mlflow.exceptions import MlflowException

    from lab.tracking import TrackingConfig, check_uri, resolve_uri

    uri = check_uri(resolve_uri(TrackingConfig(uri=tracking_uri)))
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).expanduser().is_file():
        raise LabError(f"MLflow database {uri[len('sqlite:///'):]} does not exist (pass --tracking-uri)")
    client = mlflow.MlflowClient(uri)
    try:
        info = client.get_run(run)
    except MlflowException:
        raise LabError(f"MLflow run {run} not found at {uri}") from None
    out = info.data.params.get("output_dir")
    if not out:
        raise LabError(f"MLflow run {run} has no 'output_dir' param (is it a sweep run?)")
    if not Path(out).is_dir():
        raise LabError(f"output_dir '{out}' of MLflow run {run} does not exist here (relative to {Path.cwd()})")
    return Source(Path(out), run, client.get_experiment(info.info.experiment_id).name)


def judge_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """(name, options) from a registry name or a YAML with `name` + `options` (also under a `judge:` key)."""
    if not spec.endswith((".yaml", ".yml")) and not Path(spec).is_file():
        return spec, {}
    data = load_yaml(spec)
    data = data["judge"] if isinstance(data.get("judge"), dict) else data
    if "name" not in data:
        raise LabError(f"judge config {spec} needs a 'name' key")
    options = data.get("options") or {k: v for k, v in data.items() if k not in ("name", "options")}
    if not isinstance(options, dict):
        raise LabError(f"judge config {spec}: 'options' must be a mapping")
    return str(data["name"]), dict(options)


def verdict_name(name: str, options: dict[str, Any]) -> str:
    if not options:
        return name
    return f"{name}-{hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]}"


def _manifest(vdir: Path, judge: Judge, options: dict[str, Any]) -> None:
    """Write `judge.json`, or refuse a directory that holds another judge configuration's verdicts."""
    want = {"name": judge.name, "version": judge.version, "options": json.loads(json.dumps(options, default=str))}
    path = vdir / "judge.json"
    if path.is_file():
        have = json.loads(path.read_text())
        if have != want:
            raise LabError(f"{vdir} holds verdicts of another judge configuration ({have.get('version')}, options "
                           f"{have.get('options')}); pass --name to write elsewhere")
        return
    vdir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(want, indent=2, sort_keys=True))


def _answer(row: dict[str, Any], prefill: str) -> Answer:
    concept = row["concept"] if isinstance(row["concept"], str) and row["concept"] else None
    forced = bool(row["forced"])
    return Answer(concept, row["response"] if isinstance(row["response"], str) else "", forced,
                  prefill if forced else "")


def regrade(source: pd.DataFrame, judge: Judge, vdir: Path, chunk: int = 64) -> dict[str, int]:
    """Grade every stored trial not yet in `vdir`; one verdict shard per chunk. Returns counts."""
    from lab import store
    from lab.prompts import prefill_text

    missing = [c for c in NEEDED if c not in source.columns]
    if missing:
        raise LabError(f"stored results lack column '{missing[0]}' (need {', '.join(NEEDED)})")
    store.clean_partial(vdir)
    todo = source[~source["trial_id"].isin(store.finished_ids(vdir))]
    prefill = prefill_text()
    records = todo[list(NEEDED)].to_dict("records")
    for i in range(0, len(records), chunk):
        rows = records[i:i + chunk]
        verdicts = judge.grade([_answer(r, prefill) for r in rows])
        if len(verdicts) != len(rows):
            raise LabError(f"judge {judge.name} returned {len(verdicts)} verdicts for {len(rows)} answers")
        store.write_shard(vdir, [{"trial_id": r["trial_id"], **{c: getattr(v, c) for c in VERDICT_COLUMNS}}
                                 for r, v in zip(rows, verdicts)])
    return {"new": len(records), "skipped": len(source) - len(records)}


def _flag(series: pd.Series) -> pd.Series:
    return series.map(lambda x: x is not None and x == x and bool(x))


def compare(old: pd.DataFrame, new: pd.DataFrame) -> dict[str, tuple[Confusion, int]]:
    """Per field, the confusion of the new judge against the source judge, and how many rows were left out because
    either verdict is unknown. detected: unforced trials; identified: all trials, as detected ∧ identified."""
    both = old[["trial_id", "forced", "detected", "identified"]].merge(
        new[["trial_id", "detected", "identified"]], on="trial_id", suffixes=("_old", "_new"))
    known = both["detected_old"].notna() & both["detected_new"].notna()
    unforced = ~both["forced"].astype(bool)
    out: dict[str, tuple[Confusion, int]] = {}
    det = both[known & unforced]
    out["detected"] = (confusion(_flag(det["detected_old"]).tolist(), _flag(det["detected_new"]).tolist()),
                       int((unforced & ~known).sum()))
    ide = both[known]
    out["identified"] = (confusion((_flag(ide["detected_old"]) & _flag(ide["identified_old"])).tolist(),
                                   (_flag(ide["detected_new"]) & _flag(ide["identified_new"])).tolist()),
                         int((~known).sum()))
    return out


def _label(name: str, version: str) -> str:
    return version if version.startswith(f"{name}:") else f"{name}@{version}"


def _fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def report(source: Source, old: pd.DataFrame, new: pd.DataFrame, judge: Judge, vdir: Path,
           counts: dict[str, int]) -> tuple[str, dict[str, float]]:
    """The printed agreement report and the metrics to log (new rates + agreement)."""
    from lab import metrics

    agreement = compare(old, new)
    old_judge = ", ".join(sorted({_label(a, b) for a, b in zip(old.get("judge", []), old.get("judge_version", []))}))
    old_judge, new_judge = old_judge or "?", _label(judge.name, judge.version)
    lines = [f"source: {source.directory.resolve()} ({len(old)} trials, judge {old_judge})"
             + (f" from MLflow run {source.run_id}" if source.run_id else ""),
             f"regrade: {new_judge} -> {vdir.resolve()} "
             f"({counts['new']} graded now, {counts['skipped']} already there)",
             f"unparseable verdicts: {int(new['parse_error'].sum())} "
             f"(request failures this run: {getattr(judge, 'stats', {}).get('request_failures', 0)})",
             f"agreement: rows = source judge ({old_judge}), columns = new judge ({new_judge})"]
    logged: dict[str, float] = {}
    for field, (c, left_out) in agreement.items():
        k, acc = cohen_kappa(c), accuracy(c)
        lines += [f"{field}: kappa={_fmt(k)} agreement={_fmt(acc)} n={c.n} (unknown verdicts left out: {left_out})",
                  format_confusion(c, field).replace("judge=", "new=").replace("label=", "old=")]
        logged |= {f"kappa_{field}": k, f"agreement_{field}": acc, f"n_compared_{field}": c.n}
    if {"kind", "forced"} <= set(old.columns):
        merged = old.drop(columns=[c for c in VERDICT_COLUMNS if c in old.columns]).merge(
            new[["trial_id", *VERDICT_COLUMNS]], on="trial_id")
        before, after = metrics.summarize(old), metrics.summarize(merged)
        lines.append("rates (source -> new): " + "  ".join(
            f"{k} {_fmt(before[k])} -> {_fmt(after[k])}" for k in ("tpr", "fpr", "introspection", "forced_id")))
        logged |= after
    logged["n_parse_errors"] = int(new["parse_error"].sum())
    return "\n".join(lines), logged


@entry
def main(argv: list[str] | None = None) -> int:
    """Regrade, print agreement, log an MLflow run; exit 0, or 2 on bad input."""
    from lab import store, tracking

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    source = resolve_source(args.run, args.tracking_uri)
    cfg = tracking.TrackingConfig(uri=args.tracking_uri, experiment=source.experiment or args.experiment,
                                  enabled=not args.no_tracking)
    if cfg.enabled:
        tracking.check_uri(tracking.resolve_uri(cfg))
    old = store.read(source.directory)
    name, options = judge_spec(args.judge)
    judge = make_judge(name, **options)
    vname = args.name or verdict_name(name, options)
    if not re.fullmatch(r"[A-Za-z0-9][\w.@+-]*", vname):
        raise LabError(f"verdict directory name '{vname}' must be letters, digits and ._@+- only")
    vdir = source.directory / "verdicts" / vname
    _manifest(vdir, judge, options)
    counts = regrade(old, judge, vdir, args.chunk)
    new = store.read(vdir)
    new = new[new["trial_id"].isin(set(old["trial_id"]))]
    text, logged = report(source, old, new, judge, vdir, counts)
    print(text)
    if cfg.enabled:
        params = {"source_dir": str(source.directory.resolve()), "source_run_id": source.run_id or "",
                  "verdict_dir": str(vdir.resolve()), "judge.name": name, "judge.version": judge.version,
                  **{f"judge.options.{k}": v for k, v in options.items()}}
        tags = {"source_run_id": source.run_id or "", "source_dir": str(source.directory.resolve()),
                "judge": judge.name, "judge_version": judge.version, "job": "regrade"}
        with tracking.run(cfg, params, tags=tags, run_name=f"regrade-{vname}") as active:
            tracking.log_metrics(logged)
            tracking.log_text(text + "\n", "agreement.txt")
        print(f"mlflow:  run {active.info.run_id} in experiment '{cfg.experiment}' at {tracking.resolve_uri(cfg)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
