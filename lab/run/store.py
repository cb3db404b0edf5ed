"""Results as a Parquet dataset: one file per finished shard, keyed by trial id, resumable.

Layout: `<dir>/shard-<hash of its trial ids>.parquet`. A shard is written to a temp file and renamed into place, so a
crash never leaves a half-written shard; a rerun skips every trial id already stored. Columns: see `SCHEMA_DOC`
(docs/architecture.md repeats it). Verdicts from a later regrade go to `<dir>/verdicts/<judge>/`, never over these.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lab.errors import LabError

SCHEMA_DOC = {
    "trial_id": "deterministic id of the trial (sha256 of the fields that determine its generation)",
    "model": "model name (registry key or path)",
    "concept": "concept word (for controls: the concept of the paired injected trial)",
    "layer": "0-based decoder block whose output (resid_post) is steered",
    "strength": "configured strength, in `strength_mode` units",
    "strength_mode": "raw (multiplier of v) or relative (‖s·v‖/‖resid‖)",
    "kind": "injection | control | random | norm_matched | shuffled | negative",
    "trial_number": "n in 'Trial {n}'",
    "sample": "sample index",
    "forced": "prefilled 'Yes, I detect…'",
    "prompt_variant": "prompt variant name",
    "dialogue_format": "dialogue format name",
    "seed": "sweep seed",
    "max_new_tokens": "generation budget",
    "temperature": "0 = greedy",
    "prompt": "exact prompt text",
    "inject_start": "token index where injection starts (unpadded)",
    "prompt_tokens": "prompt length in tokens",
    "response": "generated text",
    "new_tokens": "tokens generated",
    "strength_raw": "multiplier actually applied",
    "strength_rel": "‖s·v‖/‖resid‖ actually applied",
    "vector_norm": "‖v‖ of the injected vector",
    "resid_norm": "mean ‖resid_post‖ at the layer (baseline prompts)",
    "detected": "judge: claims detection",
    "identified": "judge: names the concept",
    "coherent": "judge: coherent answer",
    "reason": "judge's reason",
    "judge": "judge name",
    "judge_version": "judge (and prompt) version",
    "parse_error": "judge answer could not be parsed",
    "shard": "shard file name",
    "written_at": "UTC time the shard was written",
}


CONFIG_FILE = "config.yaml"


def save_config(root: str | os.PathLike, data: dict[str, Any]) -> Path:
    """The job's resolved config beside its shards (atomic), so a stored run can be re-reported or synced later."""
    import yaml

    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{CONFIG_FILE}.{os.getpid()}.tmp"
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, out / CONFIG_FILE)
    return out / CONFIG_FILE


def shard_files(root: str | os.PathLike) -> list[Path]:
    p = Path(root)
    return sorted(p.glob("shard-*.parquet")) if p.is_dir() else []


def finished_ids(root: str | os.PathLike) -> set[str]:
    """Trial ids already stored (reads only the id column)."""
    ids: set[str] = set()
    for f in shard_files(root):
        ids.update(pq.read_table(f, columns=["trial_id"]).column("trial_id").to_pylist())
    return ids


def write_shard(root: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows as one shard atomically; the name derives from the trial ids, so a rewrite is idempotent."""
    if not rows:
        raise ValueError("empty shard")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = "shard-" + hashlib.sha256("|".join(sorted(r["trial_id"] for r in rows)).encode()).hexdigest()[:16]
    final = root / f"{name}.parquet"
    stamp = pd.Timestamp.now(tz="UTC").isoformat()
    table = pa.Table.from_pylist([dict(r, shard=final.name, written_at=stamp) for r in rows])
    tmp = root / f".{name}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, final)
    return final


def read(root: str | os.PathLike) -> pd.DataFrame:
    """All stored rows as one DataFrame (deduplicated by trial id, first shard wins)."""
    files = shard_files(root)
    if not files:
        raise LabError(f"no results found in {root} (expected shard-*.parquet files)")
    df = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    return df.drop_duplicates("trial_id", keep="first").reset_index(drop=True)


def clean_partial(root: str | os.PathLike) -> int:
    """Remove temp files a crash left behind; returns how many."""
    n = 0
    for f in Path(root).glob(".shard-*.tmp") if Path(root).is_dir() else []:
        f.unlink(missing_ok=True)
        n += 1
    return n


def pending(trial_ids: Iterable[str], root: str | os.PathLike) -> list[str]:
    done = finished_ids(root)
    return [t for t in trial_ids if t not in done]


def save_result(path: str | os.PathLike, params: dict[str, Any], result: dict[str, Any]) -> Path:
    """A finished unit of work (a training trial, a steering-vector arm) as JSON beside its outputs, keyed by a hash
    of the settings that made it; written atomically, so a unit killed while writing is simply not finished."""
    import json

    f = Path(path)
    tmp = f.with_suffix(".tmp")
    data = {"fingerprint": _settings_hash(params), "result": result}
    tmp.write_text(json.dumps(data, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    os.replace(tmp, f)
    return f


def load_result(path: str | os.PathLike, params: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result at `path` if the same settings made it (see `save_result`), else None."""
    import json

    f = Path(path)
    if not f.is_file():
        return None
    data = json.loads(f.read_text())
    return data["result"] if data.get("fingerprint") == _settings_hash(params) else None


def fresh_dir(folder: str | os.PathLike, keep: str, params: dict[str, Any]) -> Path:
    """Empty `folder` for a new attempt of a unit of work, but keep its sub-folder `keep` (a checkpoint to resume
    from) if a stamp of the same settings is in it (`keep/settings.json`); returns `folder / keep`, stamped."""
    ck = Path(folder) / keep
    same = load_result(ck / "settings.json", params) is not None
    for p in Path(folder).iterdir() if Path(folder).is_dir() else ():
        if not (same and p == ck):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    ck.mkdir(parents=True, exist_ok=True)
    if not same:
        save_result(ck / "settings.json", params, {})
    return ck


def _settings_hash(params: dict[str, Any]) -> str:
    import json

    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]
