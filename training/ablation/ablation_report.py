"""The ablation's report: one record per expected Tune trial (finished or failed, never missing), seeds pooled per
condition (Wilson intervals of the summed counts), CSVs, the comparison plot with vector controls, the parent run's
metrics, and the printed table."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from lab.reporting.report import CONTROL_RATES
from lab.reporting.tables import interval, print_table
from training.ablation.tune_config import AblationConfig, TrialSpec

ABLATION_RATES = ("tpr", "fpr", "introspection", *CONTROL_RATES, "forced_id")


class _NoRun:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


def parent(cfg: AblationConfig, params: dict[str, Any], reuse: bool = False) -> Any:
    """The ablation's parent run; `reuse` (every trial already stored: the rerun adds nothing) resumes the parent
    run of the same config instead of opening a second one."""
    from lab.run import provenance, tracking

    if not cfg.tracking.enabled:
        return _NoRun()
    return tracking.run(
        cfg.tracking,
        params,
        tags=provenance.tags(params) | {"job": "train_ablations", "model": cfg.model.name},
        run_name=cfg.tracking.run_name or "ablations",
        reuse=reuse,
    )


def collect_results(cfg: AblationConfig, trials: list[TrialSpec], grid: Any) -> list[dict[str, Any]]:
    """One record per expected trial: finished (with its metrics) or failed (with its error), in config order."""
    from training.ablation.trial import attempts
    from training.ablation.tune_config import spec_from_config

    by_key: dict[str, Any] = {}
    for res in grid:
        if res.config:
            by_key[spec_from_config(cfg, res.config).key] = res
    records = []
    for spec in trials:
        res = by_key.get(spec.key)
        rec: dict[str, Any] = {
            "trial": spec.key,
            "condition": spec.label,
            "variant": spec.variant,
            "seed": spec.seed,
            "attempts": attempts(cfg, spec),
        }
        metrics = dict(res.metrics or {}) if res is not None else {}
        if res is None:
            rec |= {"status": "failed", "error": "trial missing from the Tune results"}
        elif res.error is not None or "tpr" not in metrics:
            err = str(res.error or "no result reported").strip().splitlines()
            rec |= {"status": "failed", "error": (err[-1] if err else "unknown error")[:500]}
        else:
            rec |= {"status": "finished", "error": ""}
            rec |= {k: v for k, v in metrics.items() if k in _METRIC_KEYS or k.startswith(("k_", "n_", "train/"))}
            rec |= {k: metrics.get(k, "") for k in ("mlflow_run_id", "adapter_dir", "eval_trials_hash")}
        records.append(rec)
    return records


_METRIC_KEYS = {m + s for m in ABLATION_RATES for s in ("", "_lo", "_hi")} | {
    "balanced_accuracy",
    "n_unparsed",
    "coherence",
    "trial_seconds",
    "eval_seconds",
}


def pool_seeds(records: list[dict[str, Any]]) -> Any:
    """Per variant (condition + grid point), seeds pooled: Wilson intervals of the summed counts."""
    import pandas as pd

    from lab.reporting.metrics import wilson

    rows = []
    for variant in dict.fromkeys(r["variant"] for r in records):
        group = [r for r in records if r["variant"] == variant]
        ok = [r for r in group if r["status"] == "finished"]
        row: dict[str, Any] = {
            "condition": variant,
            "seeds": len(group),
            "finished": len(ok),
            "failed": len(group) - len(ok),
            "status": "finished" if len(ok) == len(group) else ("partial" if ok else "failed"),
        }
        for m in ABLATION_RATES:
            have = [r for r in ok if f"n_{m}" in r and f"k_{m}" in r]
            if not have and m not in ("tpr", "fpr", "introspection"):
                continue
            k = sum(int(r[f"k_{m}"]) for r in have)
            n = sum(int(r[f"n_{m}"]) for r in have)
            p, lo, hi = wilson(k, n) if n else (math.nan, math.nan, math.nan)
            row |= {m: p, f"{m}_lo": lo, f"{m}_hi": hi, f"n_{m}": n}
        tpr, fpr = row["tpr"], row["fpr"]
        row["balanced_accuracy"] = (tpr + 1 - fpr) / 2 if not (math.isnan(tpr) or math.isnan(fpr)) else math.nan
        losses = [r.get("train/train_loss") for r in ok if r.get("train/train_loss") is not None]
        row["train_loss"] = sum(losses) / len(losses) if losses else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def report_ablation(
    cfg: AblationConfig, records: list[dict[str, Any]]
) -> tuple[Any, Any, list[dict[str, Any]], list[Path]]:
    """trials.csv (one row per trial), comparison.csv + comparison.png (per condition), failed_trials.json."""
    import pandas as pd

    from lab.reporting import plots

    rep = Path(cfg.output_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(records)
    pooled = pool_seeds(records)
    failed = [
        {k: r[k] for k in ("trial", "condition", "seed", "attempts", "error")}
        for r in records
        if r["status"] != "finished"
    ]
    hashes = {r["eval_trials_hash"] for r in records if r["status"] == "finished"}
    if len(hashes) > 1:  # cannot happen with one EvalSpec; say so loudly if it ever does
        print(f"warning: evaluations used different trial sets ({len(hashes)} hashes): rates are not comparable")
    paths = [rep / "comparison.csv", rep / "trials.csv", rep / "comparison.png", rep / "failed_trials.json"]
    pooled.to_csv(paths[0], index=False)
    table.to_csv(paths[1], index=False)
    plot_table = pooled.copy()
    plot_table["condition"] = [
        c + (" (FAILED)" if s == "failed" else f" ({s})" if s == "partial" else "")
        for c, s in zip(pooled["condition"], pooled["status"])
    ]
    shown = ["tpr", "fpr", "introspection", *(m for m in CONTROL_RATES if m in pooled and pooled[m].notna().any())]
    for m in shown:  # Wilson bounds can miss p by 1e-17 at k = 0 or k = n; bars need >= 0
        plot_table[f"{m}_lo"] = plot_table[[f"{m}_lo", m]].min(axis=1)
        plot_table[f"{m}_hi"] = plot_table[[f"{m}_hi", m]].max(axis=1)
    sw = cfg.evaluation.sweep
    plots.rate_bars(
        plot_table,
        "condition",
        paths[2],
        metrics=shown,
        title=f"{cfg.model.name}: rates per condition ({len(cfg.seeds)} seed(s) pooled; layers "
        f"{','.join(map(str, sw.layers)) or 'default'}, strengths "
        f"{','.join(f'{s:g}' for s in sw.strengths) or 'default'})",
    )
    paths[3].write_text(json.dumps(failed, indent=1))
    return table, pooled, failed, paths


def log_parent(pooled: Any, failed: list[dict[str, Any]], paths: list[Path], elapsed: float) -> None:
    from lab.run import tracking

    tracking.set_tags(
        {"failed_trials": ",".join(f["trial"] for f in failed) or "none", "n_failed_trials": str(len(failed))}
    )
    flat: dict[str, Any] = {"n_failed_trials": len(failed), "elapsed_seconds": elapsed}
    for _, r in pooled.iterrows():
        for m in ("tpr", "fpr", "introspection", "balanced_accuracy"):
            flat[f"{r['condition']}/{m}"] = r[m]
    tracking.log_metrics({re.sub(r"[^\w./\- :]", "_", k): v for k, v in flat.items()})
    tracking.log_artifacts(*paths)


def print_report(pooled: Any, failed: list[dict[str, Any]]) -> None:
    from lab.reporting.report import interpret_cells, n_note

    cols = ["tpr", "fpr", "introspection"] + [c for c in ("random_rate",) if c in pooled]
    columns = [("condition", "{condition}"), ("status", "{status}")]
    columns += [(c, interval(c, with_n=False)) for c in cols]
    print_table(pooled, columns + [("n_inj", "{n_tpr:>5.0f}"), ("train_loss", "{train_loss:>.4f}")])
    print(n_note(pooled.to_dict("records"), cols))
    for line in interpret_cells(pooled, ("condition",), "conditions"):
        print(line)
    for f in failed:
        print(f"FAILED trial {f['trial']} after {f['attempts']} attempt(s): {f['error']}")
