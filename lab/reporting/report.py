"""One report path for every job: rates with counts → printed table, CSV + plot, one MLflow run (parent/child).

Metric names are the same across jobs: `tpr`, `fpr`, `introspection`, `forced_id`, `<control>_rate`, each with
`_lo`/`_hi` (Wilson 95 %) and `n_` (the n behind the interval); per setting `L{layer}_s{strength}/<name>`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lab.reporting import metrics
from lab.reporting.tables import Column, interval, print_table, rows_of
from lab.run import tracking
from lab.run.tracking import TrackingConfig

CONTROL_RATES = ("random_rate", "norm_matched_rate", "shuffled_rate", "negative_rate")
RATES = ("tpr", "fpr", "introspection", "forced_id", *CONTROL_RATES)
HEADLINE = ("tpr", "fpr", "introspection", "forced_id", "random_rate", "balanced_accuracy")


def cell(layer: int, strength: float) -> str:
    """The per-setting metric prefix, `L{layer}_s{strength:g}`."""
    return f"L{int(layer)}_s{float(strength):g}"


def ci(r: Mapping[str, Any], k: str, with_n: bool = False) -> str:
    """`0.25 [0.10,0.48]` (with `n=12`, the distinct generations behind it, if asked), or `n/a` without samples."""
    return interval(k, with_n)(r)


def rate_metrics(row: Mapping[str, Any], prefix: str = "", names: Sequence[str] = RATES) -> dict[str, float]:
    """`{prefix}name`, `_lo`, `_hi`, `n_` for every rate present (NaN rates are dropped by tracking)."""
    out: dict[str, float] = {}
    for k in names:
        if f"n_{k}" not in row:
            continue
        for key in (k, f"{k}_lo", f"{k}_hi", f"k_{k}", f"n_{k}", f"trials_{k}"):
            if key in row:
                out[f"{prefix}{key}"] = row[key]
        for key in (f"{k}_corrected", f"{k}_corrected_lo", f"{k}_corrected_hi"):  # judge-corrected (calibration)
            if key in row:
                out[f"{prefix}{key}"] = row[key]
    for k in ("balanced_accuracy", "coherence", "n_unparsed", "n_parse_errors"):
        if k in row:
            out[f"{prefix}{k}"] = row[k]
    return out


def table_metrics(table: pd.DataFrame, by: Sequence[str] = ("layer", "strength")) -> dict[str, float]:
    """Per-setting rates as `L{layer}_s{strength}/name` (or `key=value/…` for other groupings)."""
    out: dict[str, float] = {}
    for _, r in table.iterrows():
        if tuple(by) == ("layer", "strength"):
            prefix = cell(r["layer"], r["strength"]) + "/"
        else:
            prefix = "_".join(f"{k}={r[k]}" for k in by) + "/"
        out |= rate_metrics(r.to_dict(), prefix, ("tpr", "fpr", "introspection", "forced_id", *CONTROL_RATES))
    return out


def print_rates(table: pd.DataFrame, overall: Mapping[str, Any], by: Sequence[str] = ("layer", "strength")) -> None:
    """A table of the rates present, with intervals and the n behind each, then a plain reading."""
    cols = [c for c in RATES if c in table and table[c].notna().any()]
    cols += [f"{c}_corrected" for c in cols if f"{c}_corrected" in table]  # judge-corrected, when calibrated
    keys = [(k, lambda r, k=k: f"{r[k]:g}" if isinstance(r[k], float) else str(r[k])) for k in by]
    total = dict(overall) | {k: "overall" if i == 0 else "" for i, k in enumerate(by)}
    print_table(rows_of(table) + [total], keys + rate_columns(cols))
    print(n_note([*rows_of(table), dict(overall)], cols))
    if overall.get("n_unparsed"):
        print(f"unparseable verdicts: {overall['n_unparsed']} (left out of every rate)")
    for line in interpret(overall):
        print(line)


WIDE = 0.5  # an interval at least this wide is explained under the table


def n_note(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """One line under a rate table on what its n is and, where one occurs, why an interval is wide: greedy
    duplicates counted once (n < trials), or too few trials."""
    rows = [r for r in rows if r]
    dup = [
        (r[f"trials_{k}"], r[f"n_{k}"], k, r)
        for r in rows
        for k in names
        if r.get(f"n_{k}") == r.get(f"n_{k}") and (r.get(f"trials_{k}") or 0) > (r.get(f"n_{k}") or 0) > 0
    ]
    wide = [
        (r[f"{k}_hi"] - r[f"{k}_lo"], k, r)
        for r in rows
        for k in names
        if r.get(f"n_{k}") and r.get(f"{k}_hi", 0) - r.get(f"{k}_lo", 0) >= WIDE
    ]
    head = "note: n = the distinct generations behind a rate (n (inj/ctl): TPR/FPR); intervals are Wilson 95 %"
    if dup:
        trials, n, k, r = max(dup, key=lambda d: (d[0] / d[1], d[0]))
        return (
            f"{head}; under greedy decoding identical prompts give one generation, so {int(trials)} {_what(k)} trials "
            f"count as n={int(n)} and {_name(k)}'s interval is wide ({ci(r, k)}): sample (temperature > 0) for an n that "
            "grows with the trials"
        )
    if wide:
        width, k, r = max(wide, key=lambda w: w[0])
        return f"{head}; with n={int(r[f'n_{k}'])} an interval is still {width:.2f} wide ({_name(k)} {ci(r, k)}): more trials narrow it"
    return head


def _name(k: str) -> str:
    return k.upper() if k in ("tpr", "fpr") else k.replace("_rate", "-vector rate").replace("_", " ")


def _what(k: str) -> str:
    return {"tpr": "injection", "fpr": "control", "introspection": "injection"}.get(k, k.replace("_rate", "-vector"))


def interpret_cells(table: pd.DataFrame, label: Sequence[str], noun: str = "cells") -> list[str]:
    """The reading of a table with one row per cell or condition (robustness grid, stages, adapters): per vector
    control, the cells where TPR is above it with intervals apart, named; the same comparison as `interpret`."""
    out = []
    rows = [r for r in rows_of(table) if r.get("n_tpr")]
    for k in CONTROL_RATES:
        with_ctl = [r for r in rows if r.get(f"n_{k}")]
        if not with_ctl:
            continue
        ctl = k[: -len("_rate")]
        above = [" × ".join(str(r[c]) for c in label) for r in with_ctl if r["tpr_lo"] > r[f"{k}_hi"] and _above_fpr(r)]
        if above:
            out.append(
                f"reading: TPR is above both FPR and the {ctl}-vector control (intervals apart) in {len(above)} of "
                f"{len(with_ctl)} {noun}: {', '.join(above)}; detection looks concept-specific there, not elsewhere"
            )
        else:
            out.append(
                f"reading: TPR is above both FPR and the {ctl}-vector control in none of the {len(with_ctl)} {noun} "
                "(intervals overlap): no evidence that detection is concept-specific rather than a yes-bias under "
                "any perturbation"
            )
    if rows and all(r.get("n_introspection") and r.get("introspection") == 0 for r in rows):
        out.append(f"reading: no injected concept was named with a detection claim in any of the {noun}")
    return out


def rate_columns(names: Sequence[str]) -> list[Column]:
    """Interval columns for `names`, then the n behind TPR and FPR (distinct generations)."""
    return [(c, interval(c, with_n=False)) for c in names] + [
        ("n (inj/ctl)", lambda r: f"{n_of(r, 'tpr')}/{n_of(r, 'fpr')}")
    ]


def n_of(r: Mapping[str, Any], k: str) -> str:
    """The n behind rate `k` of a row, as printed beside its interval."""
    n = r.get(f"n_{k}")
    return "0" if n is None or n != n else str(int(n))


def _above_fpr(r: Mapping[str, Any]) -> bool:
    """TPR's interval lies above FPR's (True where no FPR was measured: nothing to compare with)."""
    return not r.get("n_fpr") or r["tpr_lo"] > r["fpr_hi"]


def interpret(o: Mapping[str, Any]) -> list[str]:
    """Plain-language reading of the overall rates, from their intervals (no verdict beyond what they support)."""
    out = []
    if o.get("n_tpr") and o.get("n_fpr") and not _above_fpr(o):
        out.append(
            f"reading: TPR {o['tpr']:.2f} is not above FPR {o['fpr']:.2f} (intervals overlap): it claims detection "
            "about as often with no injection, so no evidence that it detects the injection"
        )
    for k in CONTROL_RATES:
        if not o.get(f"n_{k}"):
            continue
        ctl = k[: -len("_rate")]
        if o["tpr_lo"] > o[f"{k}_hi"] and not _above_fpr(o):
            out.append(
                f"reading: TPR is above the {ctl}-vector control (intervals apart) but not above FPR: the {ctl} "
                "vectors lower the yes-rate below the no-injection one; no evidence of concept-specific detection"
            )
        elif o["tpr_lo"] > o[f"{k}_hi"]:
            out.append(
                f"reading: TPR is above the {ctl}-vector control (intervals apart): detection is concept-specific here"
            )
        else:
            out.append(
                f"reading: TPR {o['tpr']:.2f} is not above the {ctl}-vector control {o[k]:.2f} (intervals "
                "overlap): no evidence that detection is concept-specific rather than a yes-bias under any "
                "perturbation"
            )
    if o.get("n_introspection") and o.get("introspection") == 0:
        out.append(
            f"reading: no injected concept was named with a detection claim (0/{o['n_introspection']}, "
            f"95% CI up to {o['introspection_hi']:.2f})"
        )
    return out


@dataclass(frozen=True)
class Report:
    overall: dict[str, Any]
    table: pd.DataFrame
    paths: list[Path] = field(default_factory=list)
    run_id: str | None = None


def log_run(
    cfg: TrackingConfig,
    params: Mapping[str, Any],
    metrics_: Mapping[str, Any],
    artifacts: Sequence[Any] = (),
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    trials: pd.DataFrame | None = None,
    stepped: Sequence[tuple[int, Mapping[str, Any]]] = (),
) -> str | None:
    """One finished MLflow run with params, metrics, artefacts and provenance tags (lab.run.provenance); `trials` (stored
    rows) is logged as a per-trial table of prompts, answers and verdicts; `stepped` as (step, metrics) pairs, e.g.
    per layer, which the UI draws as curves. None when tracking is off."""
    if not cfg.enabled or not reachable(cfg):
        return None
    from lab.run import provenance

    try:
        with tracking.run(
            cfg, params, tags=provenance.tags(params) | dict(tags or {}), run_name=run_name, parent_run_id=parent_run_id
        ) as active:
            tracking.log_metrics(metrics_)
            for step, values in stepped:
                tracking.log_metrics(values, step=step)
            tracking.log_artifacts(*artifacts)
            if trials is not None:
                provenance.log_trial_table(trials)
            return str(active.info.run_id)
    except Exception as e:  # the server went away mid-run: Parquet and the report files stay the source of truth
        _not_logged(cfg, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return None


_WARNED: set[str] = set()


def _not_logged(cfg: TrackingConfig, why: str) -> None:
    uri = tracking.resolve_uri(cfg)
    if uri not in _WARNED:
        _WARNED.add(uri)
        print(
            f"mlflow:  NOT logged ({why}); every result is in the Parquet dataset and report/ — log a sweep later "
            "with: python -m jobs.sync_mlflow --run <results dir>"
        )


def reachable(cfg: TrackingConfig) -> bool:
    """Whether the tracking store answers now; if not, one printed line saying nothing is lost (once per URI)."""
    from lab.errors import LabError

    try:
        tracking.check_uri(tracking.resolve_uri(cfg))
        return True
    except LabError as e:
        _not_logged(cfg, str(e))
        return False


def announce(run_id: str | None, cfg: TrackingConfig) -> None:
    """The line every job prints after logging: which run, in which experiment (nothing when tracking is off)."""
    if run_id:
        print(f"mlflow:  run {run_id} in experiment '{cfg.experiment}'")


@contextmanager
def parent_run(
    cfg: TrackingConfig, params: Mapping[str, Any], tags: Mapping[str, str] | None = None, run_name: str | None = None
) -> Iterator[str | None]:
    """A parent MLflow run for jobs with several children (children pass `parent_run_id=`); None when off."""
    if not cfg.enabled or not reachable(cfg):
        yield None
        return
    from lab.run import provenance

    with tracking.run(cfg, params, tags=provenance.tags(params) | dict(tags or {}), run_name=run_name) as active:
        yield str(active.info.run_id)


def report_config(
    df: pd.DataFrame, cfg: Any, job: str, what: str, tags: Mapping[str, str] | None = None, **kw: Any
) -> Report:
    """`report_rates` for a job config (`output_dir`, `tracking`, `model`): its flattened fields as params, tags
    naming the job and the model, title `<model>: <what>`."""
    from lab.config import flatten, to_dict

    tags = {"job": job, "model": cfg.model.name, **(tags or {})}
    params = flatten(to_dict(cfg))
    return report_rates(df, cfg.output_dir, cfg.tracking, params, f"{cfg.model.name}: {what}", tags=tags, **kw)


def report_rates(
    df: pd.DataFrame,
    out_dir: str | Path,
    cfg: TrackingConfig,
    params: Mapping[str, Any],
    title: str,
    by: Sequence[str] = ("layer", "strength"),
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    artifacts: Sequence[Any] = (),
    quiet: bool = False,
    calibration: Mapping[str, Any] | None = None,
    extra_metrics: Mapping[str, Any] | None = None,
) -> Report:
    """Rates of stored trials → `<out_dir>/report/{summary,per_concept}.csv` + `heatmap.png`, one MLflow run with
    overall and per-setting metrics (provenance tags, the per-trial answers as a table), and a printed table.
    `calibration` (lab.reporting.calibration.for_judge) adds judge-corrected rates `<rate>_corrected` with intervals."""
    from lab.reporting import plots

    table = metrics.rates(df, by=by)
    overall = metrics.summarize(df)
    if calibration:
        from lab.reporting.calibration import correct_row

        overall |= correct_row(overall, calibration)
        table = pd.DataFrame([r | correct_row(r, calibration) for r in table.to_dict("records")])
    rep = Path(out_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    paths = [rep / "summary.csv", rep / "per_concept.csv"]
    table.to_csv(paths[0], index=False)
    metrics.rates(df, by=("concept",)).to_csv(paths[1], index=False)
    if tuple(by) == ("layer", "strength"):
        paths.append(rep / "heatmap.png")
        shown = ["tpr", "fpr", *(m for m in CONTROL_RATES if m in table and table[m].notna().any())]
        modes = df["strength_mode"].dropna().unique() if "strength_mode" in df else []
        plots.rate_heatmaps(table, paths[-1], shown, title, strength_mode=modes[0] if len(modes) == 1 else None)
    run_id = log_run(
        cfg,
        params,
        {**rate_metrics(overall), **table_metrics(table, by), **(extra_metrics or {})},
        [*paths, *artifacts],
        tags=tags,
        run_name=run_name,
        parent_run_id=parent_run_id,
        trials=df,
    )
    if not quiet:
        print_rates(table, overall, by)
        print(f"report:  {paths[0].resolve()}" + (f"  {paths[-1].resolve()}" if len(paths) > 2 else ""))
        if run_id:
            print(f"mlflow:  run {run_id} in experiment '{cfg.experiment}' at {tracking.resolve_uri(cfg)}")
    return Report(overall, table, paths, run_id)
