"""Conditions side by side (training stages, adapters): one row of rates per condition, a per-setting table, bars
with the vector controls beside TPR/FPR, TPR-vs-FPR, and one MLflow parent run with a child per condition carrying
the same metric names as every other job (lab/reporting/report.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lab.reporting import metrics
from lab.reporting.report import (
    CONTROL_RATES,
    Report,
    interpret_cells,
    log_run,
    n_note,
    parent_run,
    rate_columns,
    rate_metrics,
    table_metrics,
)
from lab.reporting.tables import print_table, rows_of
from lab.run import tracking
from lab.run.tracking import TrackingConfig


def compare(
    groups: Mapping[str, pd.DataFrame],
    out_dir: str | Path,
    cfg: TrackingConfig,
    params: Mapping[str, Any],
    title: str,
    label: str = "condition",
    child_params: Mapping[str, Mapping[str, Any]] | None = None,
    child_tags: Mapping[str, Mapping[str, str]] | None = None,
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    quiet: bool = False,
) -> Report:
    """Conditions side by side (stages, original vs abliterated, adapters): one row of rates per group, a
    per-setting table, bars with the vector controls beside TPR/FPR, TPR-vs-FPR, and one MLflow parent run with a
    child per group carrying the same metric names."""
    from lab.reporting import plots

    rows, per_setting = [], []
    for name, df in groups.items():
        rows.append({label: name} | metrics.summarize(df))
        per_setting += [{label: name} | r.to_dict() for _, r in metrics.rates(df, ("layer", "strength")).iterrows()]
    table, by_setting = pd.DataFrame(rows), pd.DataFrame(per_setting)
    rep = Path(out_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    paths = [rep / f"{label}s.csv", rep / f"{label}s_by_setting.csv", rep / "rates.png", rep / "tpr_vs_fpr.png"]
    table.to_csv(paths[0], index=False)
    by_setting.to_csv(paths[1], index=False)
    shown = [m for m in ("tpr", "fpr", "introspection", *CONTROL_RATES) if m in table and table[m].notna().any()]
    plots.rate_bars(table, label, paths[2], metrics=shown, title=title)
    plots.tpr_vs_fpr(table, label, paths[3], title=f"TPR vs FPR per {label}")
    with parent_run(cfg, params, tags=tags, run_name=run_name) as parent_id:
        for name, (_, r) in zip(groups, table.iterrows()):
            sub = by_setting[by_setting[label] == name]
            log_run(
                cfg,
                (child_params or {}).get(name, {}),
                rate_metrics(r.to_dict()) | table_metrics(sub),
                tags={label: name, **(child_tags or {}).get(name, {})},
                run_name=name,
                parent_run_id=parent_id,
                trials=groups[name],
            )
        if parent_id:
            tracking.log_artifacts(*paths)
    if not quiet:
        print_table(table, [(label, lambda r: str(r[label]))] + rate_columns(shown))
        print(n_note(rows_of(table), shown))
        for line in interpret_cells(table, (label,), f"{label}s"):
            print(line)
        print(f"report:  {paths[0].resolve()}  {paths[2].resolve()}")
        if parent_id:
            print(
                f"mlflow:  parent run {parent_id} ({len(table)} child runs) in experiment '{cfg.experiment}' at "
                f"{tracking.resolve_uri(cfg)}"
            )
    return Report(table.to_dict("list"), table, paths, parent_id)
