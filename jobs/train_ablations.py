"""DPO-component ablation: `python -m jobs.train_ablations --config configs/ablations-demo.yaml`.

Conditions × seeds (× an optional hyper-parameter grid) run as Ray Tune trials (training.tune, training.trial): each
trains a LoRA adapter and evaluates it with concept vectors re-extracted from the adapted model, on the same trials
for every condition. MLflow: one parent run (config, comparison CSV, TPR/FPR/introspection plot with 95 % intervals,
failed trials) and one child run per trial (condition/domain/seed tags, training curve, rates with Wilson bounds). A
failed trial is retried `resources.max_failures` times; one that still fails is printed, tagged `failed_trials` on
the parent run, listed in failed_trials.json and kept as a `failed` row in the comparison (never silently missing);
the job then exits 3 after writing everything. Runs locally (Ray on loopback) and under `ray job submit`.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from jobs.cli import entry, load_config, parser
from lab.errors import LabError
from training.tune_config import AblationConfig, TrialSpec, absolutize, expected_trials

EXIT_TRIALS_FAILED = 3
RATES = ("tpr", "fpr", "introspection", "random_rate", "norm_matched_rate", "shuffled_rate", "forced_id")


@entry
def main(argv: list[str] | None = None) -> int:
    """Run every trial of --config; exit 0 when all finished, 3 when some failed (reported), 2 on bad input."""
    import ray

    from lab import parallel, tracking
    from lab.config import flatten, to_dict
    from training.trial import clear_attempts
    from training.tune import tuner

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = absolutize(load_config(AblationConfig, args))
    preflight(cfg)
    trials = expected_trials(cfg)
    print(f"ablation: {len(trials)} trials ({len(cfg.conditions)} conditions × {len(cfg.seeds)} seeds"
          + (f" × grid {', '.join(cfg.grid)}" if cfg.grid else "") + f"), model {cfg.model.name}, "
          f"{'TorchTrainer x' + str(cfg.resources.workers) if cfg.resources.distributed else 'in-process'} trials, "
          f"≤ {cfg.resources.max_concurrent_trials} at once, {cfg.resources.max_failures} retries each")
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    clear_attempts(cfg)
    t0 = time.time()
    started_ray = not ray.is_initialized()
    parallel.connect(cfg.address, num_cpus=cfg.ray_cpus)
    try:
        with _parent(cfg, flatten(to_dict(cfg))) as parent:
            parent_id = parent.info.run_id if parent is not None else None
            grid = tuner(cfg, parent_id).fit()
            records = collect(cfg, trials, grid)
            elapsed = time.time() - t0
            table, pooled, failed, paths = report(cfg, records)
            if parent is not None:
                _log_parent(pooled, failed, paths, elapsed)
    finally:
        if started_ray:
            ray.shutdown()
    print_report(pooled, failed)
    print(f"report:  {paths[0].parent}  ({', '.join(p.name for p in paths)})")
    if parent_id:
        print(f"mlflow:  parent run {parent_id} ({sum(r['status'] == 'finished' for r in records)} finished child "
              f"runs) in experiment '{cfg.tracking.experiment}' at {tracking.resolve_uri(cfg.tracking)}")
    print(f"elapsed: {elapsed:.0f} s")
    if failed:
        print(f"error: {len(failed)} of {len(records)} trials failed after retries: "
              + ", ".join(f["trial"] for f in failed))
        return EXIT_TRIALS_FAILED
    return 0


def preflight(cfg: AblationConfig) -> None:
    """One-line errors before any work: conditions, model/layers/judge, data, DeepSpeed file, MLflow, Ray."""
    from lab.parallel import check_address
    from lab.tracking import check_uri, resolve_uri
    from training.ds_config import deepspeed_config
    from training.evaluate import check

    check(cfg.model, cfg.evaluation)
    if cfg.data.path and not Path(cfg.data.path).exists():
        raise LabError(f"preference data not found: {cfg.data.path}")
    deepspeed_config(cfg.deepspeed)
    if cfg.deepspeed and not cfg.resources.distributed and cfg.resources.gpus < 1:
        raise LabError("deepspeed needs resources.workers > 1 (a Ray Train TorchTrainer per trial) or a GPU")
    if cfg.tracking.enabled:
        check_uri(resolve_uri(cfg.tracking))
    addr = cfg.address or os.environ.get("RAY_ADDRESS")
    if addr:
        check_address(addr)


class _NoRun:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


def _parent(cfg: AblationConfig, params: dict[str, Any]) -> Any:
    from lab import tracking

    if not cfg.tracking.enabled:
        return _NoRun()
    return tracking.run(cfg.tracking, params, tags={"job": "train_ablations", "model": cfg.model.name},
                        run_name=cfg.tracking.run_name or "ablations")


def collect(cfg: AblationConfig, trials: list[TrialSpec], grid: Any) -> list[dict[str, Any]]:
    """One record per expected trial: finished (with its metrics) or failed (with its error), in config order."""
    from training.trial import attempts
    from training.tune_config import spec_from_config

    by_key: dict[str, Any] = {}
    for res in grid:
        if res.config:
            by_key[spec_from_config(cfg, res.config).key] = res
    records = []
    for spec in trials:
        res = by_key.get(spec.key)
        rec: dict[str, Any] = {"trial": spec.key, "condition": spec.label, "variant": spec.variant,
                               "seed": spec.seed, "attempts": attempts(cfg, spec)}
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


_METRIC_KEYS = {m + s for m in RATES for s in ("", "_lo", "_hi")} | {
    "balanced_accuracy", "n_unparsed", "coherence", "trial_seconds", "eval_seconds"}


def pool(records: list[dict[str, Any]]) -> Any:
    """Per variant (condition + grid point), seeds pooled: Wilson intervals of the summed counts."""
    import pandas as pd

    from lab.metrics import wilson

    rows = []
    for variant in dict.fromkeys(r["variant"] for r in records):
        group = [r for r in records if r["variant"] == variant]
        ok = [r for r in group if r["status"] == "finished"]
        row: dict[str, Any] = {"condition": variant, "seeds": len(group), "finished": len(ok),
                               "failed": len(group) - len(ok),
                               "status": "finished" if len(ok) == len(group) else ("partial" if ok else "failed")}
        for m in RATES:
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


def report(cfg: AblationConfig, records: list[dict[str, Any]]) -> tuple[Any, Any, list[dict[str, Any]], list[Path]]:
    """trials.csv (one row per trial), comparison.csv + comparison.png (per condition), failed_trials.json."""
    import pandas as pd

    from lab import plots

    rep = Path(cfg.output_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(records)
    pooled = pool(records)
    failed = [{k: r[k] for k in ("trial", "condition", "seed", "attempts", "error")}
              for r in records if r["status"] != "finished"]
    hashes = {r["eval_trials_hash"] for r in records if r["status"] == "finished"}
    if len(hashes) > 1:  # cannot happen with one EvalSpec; say so loudly if it ever does
        print(f"warning: evaluations used different trial sets ({len(hashes)} hashes): rates are not comparable")
    paths = [rep / "comparison.csv", rep / "trials.csv", rep / "comparison.png", rep / "failed_trials.json"]
    pooled.to_csv(paths[0], index=False)
    table.to_csv(paths[1], index=False)
    plot_table = pooled.copy()
    plot_table["condition"] = [c + (" (FAILED)" if s == "failed" else f" ({s})" if s == "partial" else "")
                               for c, s in zip(pooled["condition"], pooled["status"])]
    for m in ("tpr", "fpr", "introspection"):  # Wilson bounds can miss p by 1e-17 at k = 0 or k = n; bars need >= 0
        plot_table[f"{m}_lo"] = plot_table[[f"{m}_lo", m]].min(axis=1)
        plot_table[f"{m}_hi"] = plot_table[[f"{m}_hi", m]].max(axis=1)
    sw = cfg.evaluation.sweep
    plots.rate_bars(plot_table, "condition", paths[2], metrics=("tpr", "fpr", "introspection"),
                    title=f"{cfg.model.name}: rates per condition ({len(cfg.seeds)} seed(s) pooled; layers "
                          f"{','.join(map(str, sw.layers)) or 'default'}, strengths "
                          f"{','.join(f'{s:g}' for s in sw.strengths) or 'default'})")
    paths[3].write_text(json.dumps(failed, indent=1))
    return table, pooled, failed, paths


def _log_parent(pooled: Any, failed: list[dict[str, Any]], paths: list[Path], elapsed: float) -> None:
    from lab import tracking

    tracking.set_tags({"failed_trials": ",".join(f["trial"] for f in failed) or "none",
                     "n_failed_trials": str(len(failed))})
    flat: dict[str, Any] = {"n_failed_trials": len(failed), "elapsed_seconds": elapsed}
    for _, r in pooled.iterrows():
        for m in ("tpr", "fpr", "introspection", "balanced_accuracy"):
            flat[f"{r['condition']}/{m}"] = r[m]
    tracking.log_metrics({re.sub(r"[^\w./\- :]", "_", k): v for k, v in flat.items()})
    tracking.log_artifacts(*paths)


def print_report(pooled: Any, failed: list[dict[str, Any]]) -> None:
    def ci(r: Any, k: str) -> str:
        v = r.get(k, math.nan)
        return "   n/a           " if v != v else f"{v:.2f} [{r[k + '_lo']:.2f},{r[k + '_hi']:.2f}]"

    cols = ["tpr", "fpr", "introspection"] + [c for c in ("random_rate",) if c in pooled]
    print(f"{'condition':<22} {'status':<9} " + "  ".join(f"{c:<17}" for c in cols) + "  n_inj  train_loss")
    for _, r in pooled.iterrows():
        print(f"{r['condition']:<22} {r['status']:<9} " + "  ".join(f"{ci(r, c):<17}" for c in cols)
              + f"  {int(r['n_tpr']):>5}  {r['train_loss']:.4f}")
    for f in failed:
        print(f"FAILED trial {f['trial']} after {f['attempts']} attempt(s): {f['error']}")


if __name__ == "__main__":
    raise SystemExit(main())
