"""MLflow tracking: one run per job (parent/child runs for grids), flattened config as params, rates as metrics.

Two ways to address a run, both here: `run()` makes the job's run the process's active run (the driver), and
`start_run` / `log_to_run` / `tag_run` / `log_artifacts_to_run` / `end_run` address one by `RunRef` (URI + run id)
from any process (Tune trials, Ray Train workers). The tracking URI is `tracking.uri`, else `$MLFLOW_TRACKING_URI`,
else `sqlite:///mlflow.db` (MLflow 3 refuses the old ./mlruns file store). An unreachable server is reported in one
line before any work starts.
"""

from __future__ import annotations

import math
import os
import re
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError

DEFAULT_URI = "sqlite:///mlflow.db"
MAX_PARAM = 500
_STARTED = time.time()  # this module is imported as a job starts (every job's report path imports it)


def job_seconds() -> float:
    """Seconds since the job started: what a run logs as `wall_s` when it ends (MLflow's own "Duration" is only the
    time the run was open, i.e. the time to log it)."""
    return time.time() - _STARTED


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = field(default=None, metadata={"help": "MLflow URI; empty: $MLFLOW_TRACKING_URI or sqlite"})
    experiment: str = field(default="concept-injection", metadata={"help": "MLflow experiment name"})
    run_name: str | None = field(default=None, metadata={"help": "MLflow (parent) run name; empty: the job's default"})
    artifact_root: str | None = field(
        default=None,
        metadata={"help": "where a new experiment keeps artifacts; empty: mlartifacts/ beside a sqlite DB"},
    )
    enabled: bool = field(default=True, metadata={"help": "false: nothing is logged to MLflow"})


def resolve_uri(cfg: TrackingConfig) -> str:
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def check_uri(uri: str) -> str:
    """Validate a tracking URI up front: http(s) must answer /health, sqlite's directory must exist."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as r:
                r.read()
        except OSError as e:
            raise LabError(f"MLflow tracking URI {uri} is unreachable ({getattr(e, 'reason', e)})") from None
    elif uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///") :]).expanduser().resolve().parent
        if not parent.is_dir():
            raise LabError(f"MLflow tracking URI {uri}: directory {parent} does not exist")
    elif uri.startswith(("file:", "/", ".")) and os.environ.get("MLFLOW_ALLOW_FILE_STORE") != "true":
        raise LabError(f"MLflow tracking URI {uri}: file stores need MLFLOW_ALLOW_FILE_STORE=true; use sqlite:///…")
    return uri


def _default_artifact_root(uri: str) -> str | None:
    """Absolute artifact dir beside a sqlite DB, so runs from `ray job submit` (cwd = a temp copy) keep theirs."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///") :]).expanduser().resolve().parent / "mlartifacts")
    return None


def _clean(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        s = "" if v is None else (",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
        out[k] = s if len(s) <= MAX_PARAM else s[: MAX_PARAM - 1] + "…"
    return out


# The UI opens an experiment in its model-training view (runs table, metric charts) rather than the GenAI one, and
# offers the lab's saved view of it (every run listed, the rates as columns: lab/run/mlflow_view.py).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def ensure_experiment(cfg: TrackingConfig, uri: str) -> str:
    """The id of experiment `cfg.experiment` at `uri`, created (artifacts under `artifact_root`) if missing."""
    from mlflow import MlflowClient

    from lab.run.mlflow_view import VIEW_TAG, is_current, view_tag_value

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    tags = {KIND_TAG: KIND, VIEW_TAG: view_tag_value()}
    if exp is not None:
        for k, v in tags.items():  # created elsewhere or earlier: still the model-training view and the rates view
            if k not in exp.tags or (k == VIEW_TAG and not is_current(exp.tags[k])):  # an older lab's view: renewed
                client.set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id
    root = cfg.artifact_root or _default_artifact_root(uri)
    try:
        location = root and Path(root).resolve().as_uri()
        return client.create_experiment(cfg.experiment, artifact_location=location, tags=tags)
    except Exception:  # another process created it first
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is None:
            raise
        return exp.experiment_id


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Drop NaN/inf and non-numbers (MLflow charts choke on them)."""
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k.replace("=", "_")] = f
    return out


@contextmanager
def run(
    cfg: TrackingConfig,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    reuse: bool = False,
) -> Iterator[Any]:
    """Start (and always end) an MLflow run; yields the active run. Nested when `parent_run_id` is given. `reuse`
    (a rerun that adds nothing, e.g. every trial of a grid already stored): resume the latest finished top-level run
    of the experiment with the same name and the same params instead of opening a second one (its params and
    `wall_s` stay those of the run that did the work)."""
    import mlflow

    uri = check_uri(resolve_uri(cfg))
    mlflow.set_tracking_uri(uri)
    exp_id = ensure_experiment(cfg, uri)
    mlflow.set_experiment(cfg.experiment)
    name = run_name or cfg.run_name
    cleaned = _clean(params or {})
    all_tags = dict(tags or {}) | {PARAMS_TAG: params_hash(cleaned)}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    nested = mlflow.active_run() is not None
    previous = finished_run(uri, exp_id, name, cleaned) if reuse and not parent_run_id else None
    if previous:
        active = mlflow.start_run(run_id=previous, nested=nested)
    else:
        active = mlflow.start_run(run_name=name, tags=all_tags, nested=nested)
    status = "FAILED"
    try:
        if cleaned and not previous:
            mlflow.log_params(cleaned)
        yield active
        status = "FINISHED"
        if not previous:
            mlflow.log_metric("wall_s", round(job_seconds(), 1))
    finally:
        mlflow.end_run(status=status)


PARAMS_TAG = "lab.params_sha"


def params_hash(cleaned: Mapping[str, str]) -> str:
    """A run's params as one short hash (tag `lab.params_sha`), to find the run an identical rerun belongs to."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(sorted(cleaned.items())).encode()).hexdigest()[:16]


def finished_run(uri: str, experiment_id: str, run_name: str | None, cleaned: Mapping[str, str]) -> str | None:
    """The id of the latest FINISHED top-level run of the experiment named `run_name` with exactly these params."""
    from mlflow import MlflowClient

    runs = MlflowClient(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARAMS_TAG}` = '{params_hash(cleaned)}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    for r in runs:
        if "mlflow.parentRunId" not in r.data.tags and r.info.run_name == run_name and r.data.params == cleaned:
            return str(r.info.run_id)
    return None


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Finite numeric metrics on the active run, the headline rates also rounded under `display/` (mlflow_view)."""
    import mlflow

    from lab.run.mlflow_view import display_copies

    values = finite_metrics(metrics)
    mlflow.log_metrics(values | display_copies(values), step=step)


def log_artifacts(*paths: str | os.PathLike) -> None:
    import mlflow

    for p in paths:
        mlflow.log_artifact(str(p))


def log_text(text: str, artifact_file: str) -> None:
    """A text artifact on the active run (`run()`)."""
    import mlflow

    mlflow.log_text(text, artifact_file)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Tags on the active run (`run()`)."""
    import mlflow

    mlflow.set_tags({k: str(v) for k, v in tags.items()})


# Runs addressed by URI and run id (`MlflowClient`, never the process-global active run), so a Tune trial, a Ray
# Train rank-0 worker or any other process can log to the run its driver started.


@dataclass(frozen=True)
class RunRef:
    """An MLflow run anywhere: its tracking URI and run id (picklable; pass it to workers)."""

    uri: str
    run_id: str


def start_run(
    cfg: TrackingConfig,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> RunRef:
    """Create a run (a child of `parent_run_id` when given) without making it active; end it with `end_run`."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    uri = check_uri(resolve_uri(cfg))
    client = MlflowClient(uri)
    all_tags = dict(tags or {}) | ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})
    run_ = client.create_run(ensure_experiment(cfg, uri), run_name=run_name, tags=all_tags)
    ref = RunRef(uri, run_.info.run_id)
    items = [Param(k, v) for k, v in _clean(params or {}).items()]
    for i in range(0, len(items), 100):
        client.log_batch(ref.run_id, params=items[i : i + 100])
    return ref


def log_to_run(ref: RunRef, metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log finite numeric metrics to run `ref` at `step` (0 when None), in batches (rates also rounded under
    `display/`)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from lab.run.mlflow_view import display_copies

    ts = int(time.time() * 1000)
    values = finite_metrics(metrics)
    items = [Metric(k, v, ts, step or 0) for k, v in (values | display_copies(values)).items()]
    client = MlflowClient(ref.uri)
    for i in range(0, len(items), 500):
        client.log_batch(ref.run_id, metrics=items[i : i + 500])


def tag_run(ref: RunRef, tags: Mapping[str, Any]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    MlflowClient(ref.uri).log_batch(ref.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_artifacts_to_run(ref: RunRef, *paths: str | os.PathLike) -> None:
    """Upload the files of `paths` that exist (a missing one is skipped)."""
    from mlflow import MlflowClient

    client = MlflowClient(ref.uri)
    for p in paths:
        if Path(p).exists():
            client.log_artifact(ref.run_id, str(p))


def end_run(ref: RunRef, status: str = "FINISHED") -> None:
    """End run `ref`; a finished one gets `wall_s`, this process's time since it started."""
    from mlflow import MlflowClient

    client = MlflowClient(ref.uri)
    if status == "FINISHED":
        client.log_metric(ref.run_id, "wall_s", round(job_seconds(), 1))
    client.set_terminated(ref.run_id, status=status)


@dataclass(frozen=True)
class Source:
    directory: Path
    run_id: str | None = None
    experiment: str | None = None


def resolve_source(run: str, tracking_uri: str | None = None) -> Source:
    """`--run` of a rerun: a directory of shards, or an MLflow run id whose `output_dir` param names one."""
    if Path(run).is_dir():
        return Source(Path(run))
    if not re.fullmatch(r"[0-9a-f]{32}", run):
        raise LabError(f"--run '{run}' is neither a directory of Parquet shards nor an MLflow run id")
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = check_uri(resolve_uri(TrackingConfig(uri=tracking_uri)))
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).expanduser().is_file():
        raise LabError(f"MLflow database {uri[len('sqlite:///') :]} does not exist (pass --tracking-uri)")
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
