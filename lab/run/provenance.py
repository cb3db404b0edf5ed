"""What a run was made from, as MLflow tags: git commit (and whether the tree was dirty), package versions, a hash of
the config, fingerprints of the model and the stimulus data; and the per-trial answers as an MLflow table.

Seeds and trial ids come from sha256 of their fields (`lab.protocol.trials.trial_id`, `lab.generate.runner.VectorBank.vector`), never
from Python's per-process `hash()`, so the same config gives the same ids and seeds in every process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

PACKAGES = ("torch", "transformers", "ray", "mlflow", "trl", "peft")
ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
TRIAL_COLUMNS = (
    "trial_id",
    "kind",
    "concept",
    "vector",
    "layer",
    "strength",
    "strength_raw",
    "strength_rel",
    "trial_number",
    "sample",
    "forced",
    "prompt",
    "response",
    "detected",
    "identified",
    "coherent",
    "reason",
    "judge",
)


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str, str]:
    """(commit, "true"/"false" dirty) of the checkout lab/ lives in; ("unknown", "unknown") without git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, str(dirty).lower()


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def config_hash(params: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex) of the flattened params, keys sorted: equal configs give equal hashes."""
    blob = json.dumps({str(k): str(v) for k, v in params.items()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def data_fingerprint() -> str:
    """sha256 (first 16 hex) over the packaged stimuli (lab/data: concepts, baseline words, prompts, labels)."""
    h = hashlib.sha256()
    for p in sorted(DATA.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(DATA).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def model_fingerprint(params: Mapping[str, Any]) -> str | None:
    """The model's identity as in trial ids (registry name, dtype, adapter fingerprint), from `model.*` params."""
    if "model.name" not in params:
        return None
    from lab.experiments.concept_injection import model_key

    return model_key(
        SimpleNamespace(
            name=str(params["model.name"]),
            dtype=str(params.get("model.dtype") or "float32"),
            adapter=params.get("model.adapter") or None,
        )
    )


def tags(params: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Provenance tags for an MLflow run (`provenance.*`)."""
    commit, dirty = git_state()
    out = {"provenance.git_commit": commit, "provenance.git_dirty": dirty, "provenance.data": data_fingerprint()}
    out |= {f"provenance.version.{k}": v for k, v in versions().items()}
    if params:
        out["provenance.config_hash"] = config_hash(params)
        model = model_fingerprint(params)
        if model:
            out["provenance.model"] = model
    return out


def trial_table(df: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader wants next to the rates: prompt, response, verdict and the judge's reason."""
    cols = [c for c in TRIAL_COLUMNS if c in df.columns]
    out = df[cols].copy()
    for c in ("detected", "identified", "coherent"):
        if c in out:
            out[c] = out[c].map(lambda v: "" if v is None or v != v else str(bool(v)).lower())
    return out.reset_index(drop=True)


def log_trial_table(df: pd.DataFrame, name: str = "trials.json") -> None:
    """Log the per-trial answers to the active MLflow run as a table (readable in the UI's artefact view)."""
    import mlflow

    if len(df):
        mlflow.log_table(data=trial_table(df), artifact_file=name)
