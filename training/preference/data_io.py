"""Preference-data files: reading a source into plain rows, and writing rows as JSONL or Parquet.

`read_source` takes JSONL (`.jsonl`/`.json`, one object a line), Parquet (`.parquet`), a HF `datasets` directory
written by `save_to_disk` (a `DatasetDict` needs `split`), a folder in the Hub layout (data/<split>-*.parquet or
.jsonl), a `datasets.Dataset` / `DatasetDict`, or a list of dicts; unreadable sources raise a one-line `LabError`.
Validation and formats are `training.preference.data`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lab.errors import LabError


def read_source(source: Any, split: str | None) -> tuple[str, list[dict[str, Any]]]:
    from datasets import Dataset, DatasetDict

    if isinstance(source, DatasetDict):
        return "dataset", _pick_split(source, split, "dataset").to_list()
    if isinstance(source, Dataset):
        return "dataset", source.to_list()
    if isinstance(source, (list, tuple)):
        return "rows", [dict(r) if isinstance(r, Mapping) else r for r in source]
    path = Path(source)
    if path.is_dir() and not any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
        files = _data_files(path, split)
        if files:  # the Hub layout: data/<split>-00000-of-00001.parquet (or .jsonl)
            return str(path), [row for f in files for row in read_source(str(f), None)[1]]
    if path.is_dir():
        from datasets import load_from_disk

        try:
            ds = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:
            raise LabError(f"{path} is not a dataset saved with save_to_disk: {str(e).splitlines()[0]}") from None
        ds = _pick_split(ds, split, str(path)) if isinstance(ds, DatasetDict) else ds
        return str(path), ds.to_list()
    if not path.is_file():
        raise LabError(f"preference data not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return str(path), pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a bad file
            raise LabError(f"{path} is not a readable Parquet file: {str(e).splitlines()[0]}") from None
    if path.suffix in (".jsonl", ".json"):
        return str(path), _read_jsonl(path)
    raise LabError(f"unsupported preference data file {path} (use .jsonl, .parquet or a save_to_disk directory)")


def _data_files(path: Path, split: str | None) -> list[Path]:
    """Parquet / JSONL files under `path` (sorted); with `split`, those whose name or a parent folder is that split."""
    files = sorted(f for f in path.rglob("*") if f.suffix in (".parquet", ".jsonl") and f.is_file())
    if split is not None:
        files = [f for f in files if split in f.relative_to(path).parts[:-1] or f.name.startswith(split)]
    return files


def _pick_split(dd: Any, split: str | None, where: str) -> Any:
    if split is None and len(dd) == 1:
        return next(iter(dd.values()))
    if split not in dd:
        raise LabError(f"{where} holds splits {', '.join(dd)}: choose one with split=")
    return dd[split]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise LabError(f"{path} line {i}: not valid JSON ({e.msg})") from None
    return rows


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


def write_parquet(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([dict(r) for r in rows]), p)
    return p
