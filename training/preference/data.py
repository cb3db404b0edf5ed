"""Preference data: load, validate, convert, split, subset and swap prompt/chosen/rejected rows.

Sources (read by `training.preference.data.read_source`): JSONL, Parquet, a HF `datasets` directory written by `save_to_disk`,
the Hub's data/<split>-* layout, a `datasets.Dataset` or `DatasetDict`, or a list of dicts. Two formats, one per data
set: *plain* (`prompt`, `chosen`, `rejected` are strings) and *conversational* (`prompt` is a list of
`{role, content}` messages ending in a user turn; `chosen` / `rejected` are lists of assistant messages). Every row
carries a `domain` label (filled with `default_domain` where the column is missing). Malformed rows raise a one-line
`LabError` naming the row (1-based) and the field.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

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


Format = Literal["auto", "conversational", "plain"]
FIELDS = ("prompt", "chosen", "rejected")
ROLES = {"system", "user", "assistant"}


def load_preferences(
    source: Any,
    *,
    format: Format = "auto",
    split: str | None = None,
    domains: Sequence[str] | None = None,
    default_domain: str | None = "general",
) -> Any:
    """Load and validate preference rows into a `datasets.Dataset` (optionally converted and domain-filtered)."""
    from datasets import Dataset

    name, rows = read_source(source, split)
    rows = validate_rows(rows, source=name, default_domain=default_domain)
    if format == "conversational":
        rows = [to_conversational(r) for r in rows]
    elif format == "plain":
        rows = [to_plain(r) for r in rows]
    elif format != "auto":
        raise LabError(f"data format must be 'auto', 'conversational' or 'plain', got {format!r}")
    ds = Dataset.from_list(rows)
    return select_domains(ds, domains) if domains else ds


def validate_rows(
    rows: Iterable[Any], *, source: str = "data", default_domain: str | None = "general"
) -> list[dict[str, Any]]:
    """Check every row; return copies with a `domain`. Raises `LabError("<source> row N: field 'x' ...")`."""
    out: list[dict[str, Any]] = []
    first_conv: bool | None = None
    for n, row in enumerate(rows, 1):
        where = f"{source} row {n}"
        if not isinstance(row, Mapping):
            raise LabError(f"{where}: expected an object with prompt/chosen/rejected, got {type(row).__name__}")
        for f in FIELDS:
            if row.get(f) is None:
                raise LabError(f"{where}: field '{f}' is missing")
        conv = {f: _check_field(row[f], f, where) for f in FIELDS}
        bad = [f for f in FIELDS[1:] if conv[f] != conv["prompt"]]
        if bad:
            raise LabError(f"{where}: field '{bad[0]}' mixes conversational and plain formats with 'prompt'")
        is_conv = conv["prompt"]
        if first_conv is None:
            first_conv = is_conv
        elif first_conv != is_conv:
            kind = "conversational" if is_conv else "plain"
            raise LabError(f"{where}: field 'prompt' is {kind} but earlier rows use the other format")
        if is_conv:
            if row["prompt"][-1]["role"] != "user":
                raise LabError(f"{where}: field 'prompt' must end with a user message")
            for f in ("chosen", "rejected"):
                if any(m["role"] != "assistant" for m in row[f]):
                    raise LabError(f"{where}: field '{f}' must hold only assistant messages")
        if row["chosen"] == row["rejected"]:
            raise LabError(f"{where}: fields 'chosen' and 'rejected' are identical")
        domain = row.get("domain", default_domain)
        if not isinstance(domain, str) or not domain.strip():
            raise LabError(f"{where}: field 'domain' must be a non-empty string, got {domain!r}")
        out.append({**row, "domain": domain})
    if not out:
        raise LabError(f"{source} holds no preference rows")
    return out


def _check_field(value: Any, field: str, where: str) -> bool:
    """True for a conversational value, False for a plain string; raises on anything else."""
    if isinstance(value, str):
        if not value.strip():
            raise LabError(f"{where}: field '{field}' is empty")
        return False
    if not isinstance(value, (list, tuple)) or not value:
        raise LabError(f"{where}: field '{field}' must be a string or a non-empty list of messages")
    for j, m in enumerate(value):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise LabError(
                f"{where}: field '{field}' message {j + 1} needs a role in {sorted(ROLES)} and a string "
                f"content, got {m!r}"[:300]
            )
    return True


def is_conversational(row: Mapping[str, Any]) -> bool:
    return not isinstance(row["prompt"], str)


def to_conversational(row: Mapping[str, Any], system: str | None = None) -> dict[str, Any]:
    """Plain strings → one user turn (after an optional system turn) and one assistant turn each."""
    if is_conversational(row):
        return dict(row)
    prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": row["prompt"]}]
    return {
        **row,
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
    }


def to_plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """Messages → "User: …\\nAssistant:" text (no chat template); inverse of `to_conversational` up to format."""
    if not is_conversational(row):
        return dict(row)
    turns = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in row["prompt"])
    return {
        **row,
        "prompt": turns + "\nAssistant:",
        "chosen": " " + _text(row["chosen"]),
        "rejected": " " + _text(row["rejected"]),
    }


def _text(messages: Sequence[Mapping[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


def split_indices(domains: Sequence[str], eval_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Stratified train/eval indices: round(eval_fraction · N) eval rows in all, shared among domains in proportion
    to their size (largest remainders get the leftover rows), each domain's rows drawn at random (seeded)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise LabError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    rng = random.Random(seed)
    by_domain: dict[str, list[int]] = {}
    for i, d in enumerate(domains):
        by_domain.setdefault(d, []).append(i)
    names = sorted(by_domain)
    exact = {d: eval_fraction * len(by_domain[d]) for d in names}
    quota = {d: int(exact[d]) for d in names}
    leftover = round(eval_fraction * len(domains)) - sum(quota.values())
    for d in sorted(names, key=lambda d: (quota[d] - exact[d], d))[: max(0, leftover)]:
        quota[d] += 1
    train: list[int] = []
    evals: list[int] = []
    for d in names:
        idx = by_domain[d][:]
        rng.shuffle(idx)
        evals.extend(idx[: quota[d]])
        train.extend(idx[quota[d] :])
    return sorted(train), sorted(evals)


def train_eval_split(ds: Any, eval_fraction: float = 0.1, seed: int = 0) -> tuple[Any, Any]:
    """Split a `Dataset` 90/10 (by default), stratified by domain, deterministic in `seed`."""
    tr, ev = split_indices(ds["domain"], eval_fraction, seed)
    return ds.select(tr), ds.select(ev)


def select_domains(ds: Any, domains: Sequence[str]) -> Any:
    """Rows whose `domain` is one of `domains`; an unknown domain raises (listing the available ones)."""
    have = sorted(set(ds["domain"]))
    missing = [d for d in domains if d not in have]
    if missing:
        raise LabError(f"domain '{missing[0]}' is not in the data (domains: {', '.join(have)})")
    keep = set(domains)
    return ds.select([i for i, d in enumerate(ds["domain"]) if d in keep])


def swap_mask(n: int, prob: float, seed: int) -> list[bool]:
    """Which of `n` pairs to swap: each independently with probability `prob` (1 → all, 0 → none), seeded."""
    if not 0.0 <= prob <= 1.0:
        raise LabError(f"swap probability must be in [0, 1], got {prob}")
    rng = random.Random(seed)
    return [rng.random() < prob for _ in range(n)]


def swap_pairs(ds: Any, prob: float, seed: int = 0) -> Any:
    """Swap chosen/rejected per `swap_mask`; adds a boolean `swapped` column."""
    mask = swap_mask(len(ds), prob, seed)

    def fn(row: dict[str, Any], i: int) -> dict[str, Any]:
        s = mask[i]
        return {
            "chosen": row["rejected"] if s else row["chosen"],
            "rejected": row["chosen"] if s else row["rejected"],
            "swapped": s,
        }

    return ds.map(fn, with_indices=True, load_from_cache_file=False)
