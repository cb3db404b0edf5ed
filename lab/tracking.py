"""MLflow tracking: one run per job (parent/child runs for grids), flattened config as params, rates as metrics.

The tracking URI is `tracking.uri`, else `$MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db` (MLflow 3 refuses the
old ./mlruns file store). An unreachable server is reported in one line before any work starts.
"""
from __future__ import annotations

import math
import os
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError

DEFAULT_URI = "sqlite:///mlflow.db"
MAX_PARAM = 500


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = field(default=None, metadata={"help": "MLflow URI; empty: $MLFLOW_TRACKING_URI or sqlite"})
    experiment: str = field(default="concept-injection", metadata={"help": "MLflow experiment name"})
    run_name: str | None = None
    artifact_root: str | None = field(default=None, metadata={
        "help": "where a new experiment keeps artifacts; empty: mlartifacts/ beside a sqlite DB"})
    enabled: bool = True


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
        parent = Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
        if not parent.is_dir():
            raise LabError(f"MLflow tracking URI {uri}: directory {parent} does not exist")
    elif uri.startswith(("file:", "/", ".")) and os.environ.get("MLFLOW_ALLOW_FILE_STORE") != "true":
        raise LabError(f"MLflow tracking URI {uri}: file stores need MLFLOW_ALLOW_FILE_STORE=true; use sqlite:///…")
    return uri


def _default_artifact_root(uri: str) -> str | None:
    """Absolute artifact dir beside a sqlite DB, so runs from `ray job submit` (cwd = a temp copy) keep theirs."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///"):]).expanduser().resolve().parent / "mlartifacts")
    return None


def _clean(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        s = "" if v is None else (",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
        out[k] = s if len(s) <= MAX_PARAM else s[: MAX_PARAM - 1] + "…"
    return out


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
def run(cfg: TrackingConfig, params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
        run_name: str | None = None, parent_run_id: str | None = None) -> Iterator[Any]:
    """Start (and always end) an MLflow run; yields the active run. Nested when `parent_run_id` is given."""
    import mlflow

    uri = check_uri(resolve_uri(cfg))
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(cfg.experiment) is None:
        root = cfg.artifact_root or _default_artifact_root(uri)
        try:
            mlflow.create_experiment(cfg.experiment, artifact_location=root and Path(root).resolve().as_uri())
        except Exception:  # another process created it first
            if mlflow.get_experiment_by_name(cfg.experiment) is None:
                raise
    mlflow.set_experiment(cfg.experiment)
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    nested = mlflow.active_run() is not None
    active = mlflow.start_run(run_name=run_name or cfg.run_name, tags=all_tags, nested=nested)
    status = "FAILED"
    try:
        if params:
            mlflow.log_params(_clean(params))
        yield active
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics(finite_metrics(metrics), step=step)


def log_artifacts(*paths: str | os.PathLike) -> None:
    import mlflow

    for p in paths:
        mlflow.log_artifact(str(p))


def run_dir(run_id: str, cfg: TrackingConfig | None = None) -> str:
    """The results directory an MLflow run recorded (tag `results_dir`, else param `output_dir`), for reruns of
    model-free analyses from a run id."""
    import mlflow

    mlflow.set_tracking_uri(check_uri(resolve_uri(cfg or TrackingConfig())))
    try:
        run = mlflow.get_run(run_id)
    except Exception as e:  # noqa: BLE001  (MLflow raises several types for an unknown id or a bad store)
        raise LabError(f"cannot find MLflow run '{run_id}' ({str(e).splitlines()[0]})") from None
    out = run.data.tags.get("results_dir") or run.data.params.get("output_dir")
    if not out or not Path(out).exists():
        raise LabError(f"MLflow run {run_id} records no existing results directory (got {out!r})")
    return out
