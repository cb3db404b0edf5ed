"""Re-judging stored generations: verdicts beside the originals (`<dir>/verdicts/<name>/`, keyed by trial id,
resumable), the agreement with the source judge (Cohen's kappa, confusion per field) and the rates before/after."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from lab.config import load_yaml
from lab.errors import LabError
from lab.judges import Judge, answer_for
from lab.judges.agreement import Confusion, accuracy, cohen_kappa, confusion, format_confusion
from lab.run.tracking import Source

VERDICT_COLUMNS = ("detected", "identified", "coherent", "reason", "judge", "judge_version", "parse_error")
NEEDED = ("trial_id", "concept", "response", "forced")
DIALOGUE = ("prompt_variant", "dialogue_format", "trial_number")


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


def manifest(vdir: Path, judge: Judge, options: dict[str, Any]) -> None:
    """Write `judge.json`, or refuse a directory that holds another judge configuration's verdicts."""
    want = {"name": judge.name, "version": judge.version, "options": json.loads(json.dumps(options, default=str))}
    path = vdir / "judge.json"
    if path.is_file():
        have = json.loads(path.read_text())
        if have != want:
            raise LabError(
                f"{vdir} holds verdicts of another judge configuration ({have.get('version')}, options "
                f"{have.get('options')}); pass --name to write elsewhere"
            )
        return
    vdir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(want, indent=2, sort_keys=True))


def regrade(source: pd.DataFrame, judge: Judge, vdir: Path, chunk: int = 64) -> dict[str, int]:
    """Grade every stored trial not yet in `vdir`; one verdict shard per chunk. Returns counts."""
    from lab.run import store

    missing = [c for c in NEEDED if c not in source.columns]
    if missing:
        raise LabError(f"stored results lack column '{missing[0]}' (need {', '.join(NEEDED)})")
    store.clean_partial(vdir)
    todo = source[~source["trial_id"].isin(store.finished_ids(vdir))]
    extra = [c for c in DIALOGUE if c in source.columns]  # the judge is shown the variant's own dialogue
    records = todo[list(NEEDED) + extra].to_dict("records")
    for i in range(0, len(records), chunk):
        rows = records[i : i + chunk]
        verdicts = judge.grade([answer_for(r) for r in rows])
        if len(verdicts) != len(rows):
            raise LabError(f"judge {judge.name} returned {len(verdicts)} verdicts for {len(rows)} answers")
        store.write_shard(
            vdir,
            [
                {"trial_id": r["trial_id"], **{c: getattr(v, c) for c in VERDICT_COLUMNS}}
                for r, v in zip(rows, verdicts)
            ],
        )
    return {"new": len(records), "skipped": len(source) - len(records)}


def _flag(series: pd.Series) -> pd.Series:
    return series.map(lambda x: x is not None and x == x and bool(x))


def compare_verdicts(old: pd.DataFrame, new: pd.DataFrame) -> dict[str, tuple[Confusion, int]]:
    """Per field, the confusion of the new judge against the source judge, and how many rows were left out because
    either verdict is unknown. detected: unforced trials; identified: all trials, as detected ∧ identified."""
    both = old[["trial_id", "forced", "detected", "identified"]].merge(
        new[["trial_id", "detected", "identified"]], on="trial_id", suffixes=("_old", "_new")
    )
    known = both["detected_old"].notna() & both["detected_new"].notna()
    unforced = ~both["forced"].astype(bool)
    out: dict[str, tuple[Confusion, int]] = {}
    det = both[known & unforced]
    out["detected"] = (
        confusion(_flag(det["detected_old"]).tolist(), _flag(det["detected_new"]).tolist()),
        int((unforced & ~known).sum()),
    )
    ide = both[known]
    out["identified"] = (
        confusion(
            (_flag(ide["detected_old"]) & _flag(ide["identified_old"])).tolist(),
            (_flag(ide["detected_new"]) & _flag(ide["identified_new"])).tolist(),
        ),
        int((~known).sum()),
    )
    return out


def _label(name: str, version: str) -> str:
    return version if version.startswith(f"{name}:") else f"{name}@{version}"


def _fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def regrade_report(
    source: Source, old: pd.DataFrame, new: pd.DataFrame, judge: Judge, vdir: Path, counts: dict[str, int]
) -> tuple[str, dict[str, float]]:
    """The printed agreement report and the metrics to log (new rates + agreement)."""
    from lab.reporting import metrics

    agreement = compare_verdicts(old, new)
    old_judge = ", ".join(sorted({_label(a, b) for a, b in zip(old.get("judge", []), old.get("judge_version", []))}))
    old_judge, new_judge = old_judge or "?", _label(judge.name, judge.version)
    lines = [
        f"source: {source.directory.resolve()} ({len(old)} trials, judge {old_judge})"
        + (f" from MLflow run {source.run_id}" if source.run_id else ""),
        f"regrade: {new_judge} -> {vdir.resolve()} ({counts['new']} graded now, {counts['skipped']} already there)",
        f"unparseable verdicts: {int(new['parse_error'].sum())} "
        f"(request failures this run: {getattr(judge, 'stats', {}).get('request_failures', 0)})",
        f"agreement: rows = source judge ({old_judge}), columns = new judge ({new_judge})",
    ]
    logged: dict[str, float] = {}
    for field, (c, left_out) in agreement.items():
        k, acc = cohen_kappa(c), accuracy(c)
        lines += [
            f"{field}: kappa={_fmt(k)} agreement={_fmt(acc)} n={c.n} (unknown verdicts left out: {left_out})",
            format_confusion(c, field).replace("judge=", "new=").replace("label=", "old="),
        ]
        logged |= {f"kappa_{field}": k, f"agreement_{field}": acc, f"n_compared_{field}": c.n}
    if {"kind", "forced"} <= set(old.columns):
        merged = old.drop(columns=[c for c in VERDICT_COLUMNS if c in old.columns]).merge(
            new[["trial_id", *VERDICT_COLUMNS]], on="trial_id"
        )
        before, after = metrics.summarize(old), metrics.summarize(merged)
        lines.append(
            "rates (source -> new): "
            + "  ".join(
                f"{k} {_fmt(before[k])} -> {_fmt(after[k])}" for k in ("tpr", "fpr", "introspection", "forced_id")
            )
        )
        logged |= after
    logged["n_parse_errors"] = int(new["parse_error"].sum())
    return "\n".join(lines), logged
