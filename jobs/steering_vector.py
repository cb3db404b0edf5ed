"""Trained bias vector, held-out concepts: `python -m jobs.steering_vector --config configs/steering-vector-demo.yaml`.

A Ray Tune grid (training/bias_tune.py): `baseline` (no bias) and one trial per bias layer × seed, each training a
zero-initialised bias on the 400 training-side concepts of the stored split and evaluating it on the held-out ones
with held-out injections, random / norm-matched vector injections and no-injection controls. Report (recomputed from
the stored Parquet, as `python -m analysis.bias_guards --run <output_dir>` does): comparison.csv, before_after.png,
per_layer.png, verdict.txt; MLflow: a parent run and one child per arm (its rates, the baseline's as `before/*`, the
verdict flags). The verdict says whether a gain is concept-specific or the bias made a perturbation detector.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from jobs.cli import entry, load_config, parser
from training.bias_tune import SteeringVectorConfig, absolutize, arms

SHOWN = ("tpr", "fpr", "random_rate", "norm_matched_rate", "introspection")


@entry
def main(argv: list[str] | None = None) -> int:
    """Train and evaluate every arm of --config; exit 0, 3 when an arm failed, 2 on bad input."""
    import ray

    from analysis.bias_guards import comparison, load_rates, verdict
    from analysis.steering_vector import stored_split
    from lab import parallel, tracking
    from lab.config import flatten, to_dict
    from training.bias_tune import tuner

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = absolutize(load_config(SteeringVectorConfig, args))
    if cfg.tracking.enabled:
        tracking.check_uri(tracking.resolve_uri(cfg.tracking))
    split = stored_split(cfg.bias.split_seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(
        json.dumps(split.to_dict() | {"heldout_evaluated": list(split.heldout[: cfg.evaluation.n_heldout])}, indent=1)
    )
    plan = arms(cfg)
    print(
        f"steering vector: {len(plan)} arms ({', '.join(plan)}), model {cfg.model.name}, bias at "
        f"{cfg.bias.site}, held-out concepts {cfg.evaluation.n_heldout} of {len(split.heldout)} (split seed "
        f"{split.seed}; {len(split.train)} train / {len(split.val)} val)"
    )
    t0 = time.time()
    started = not ray.is_initialized()
    parallel.connect(cfg.address, num_cpus=cfg.ray_cpus)
    with ExitStack() as stack:
        stack.callback(lambda: ray.shutdown() if started else None)
        parent = (
            stack.enter_context(
                tracking.run(
                    cfg.tracking,
                    flatten(to_dict(cfg)),
                    {"job": "steering_vector", "model": cfg.model.name},
                    run_name=cfg.tracking.run_name or "steering-vector",
                )
            )
            if cfg.tracking.enabled
            else None
        )
        grid = tuner(cfg, parent.info.run_id if parent else None).fit()
        failed = [r.config.get("arm", "?") for r in grid if r.error is not None]
        run_ids = {r.metrics.get("arm"): r.metrics.get("mlflow_run_id") for r in grid if r.error is None}
        rates, _ = load_rates(out)
        meta = {a: {k: str(v) for k, v in m.items()} for a, m in plan.items()}
        table = comparison(rates, meta)
        verdicts = {a: verdict(rates.get("baseline", {}), r) for a, r in rates.items() if a != "baseline"}
        paths = report(cfg, table, verdicts, out / "report")
        if parent:
            tracking.log_metrics(
                {f"{a}/{m}": r.get(m, math.nan) for a, r in rates.items() for m in SHOWN}
                | {"elapsed_seconds": time.time() - t0, "n_failed_arms": len(failed)}
            )
            tracking.log_artifacts(*paths)
            _annotate_children(cfg, run_ids, rates.get("baseline", {}), verdicts)
    print(paths[-1].read_text())
    print(f"report:  {paths[0].parent}  ({', '.join(p.name for p in paths)})")
    if parent:
        print(f"mlflow:  parent run {parent.info.run_id} in '{cfg.tracking.experiment}' at {cfg.tracking.uri}")
    print(f"elapsed: {time.time() - t0:.0f} s")
    if failed:
        print(f"error: arms failed: {', '.join(failed)}")
        return 3
    return 0


def report(cfg: SteeringVectorConfig, table: Any, verdicts: dict[str, Any], rep: Path) -> list[Path]:
    from lab import plots

    rep.mkdir(parents=True, exist_ok=True)
    paths = [rep / "comparison.csv", rep / "before_after.png", rep / "per_layer.png", rep / "verdict.txt"]
    table.to_csv(paths[0], index=False)
    shown = [m for m in SHOWN if m in table and table[m].notna().any()]
    if not shown:  # no arm finished: the table and the verdict say so, there is nothing to plot
        paths = [paths[0], paths[3]]
    else:
        plots.rate_bars(
            table.fillna({f"{m}{s}": 0.0 for m in shown for s in ("", "_lo", "_hi")}),
            "arm",
            paths[1],
            metrics=shown,
            title=f"{cfg.model.name}, held-out: before vs after",
        )
        layer_curve(table, shown, paths[2], f"{cfg.model.name}: bias layer sweep (seeds pooled by mean)")
    lines = [f"{cfg.model.name}: trained bias at {cfg.bias.site}, {cfg.evaluation.n_heldout} held-out concepts"]
    for arm, v in verdicts.items():
        lines += [f"== {arm}"] + [f"  {line}" for line in v["lines"]]
    paths[3].write_text("\n".join(lines) + "\n")
    return paths


def layer_curve(table: Any, metrics: list[str], path: Path, title: str) -> Path:
    """Rate after training per bias layer (95 % intervals), the baseline as a dashed line per metric."""
    import matplotlib.pyplot as plt

    from lab import plots

    base = table[table.arm == "baseline"]
    rows = table[(table.arm != "baseline") & (table.layer != "all")].copy()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    if len(rows):
        rows["x"] = rows["layer"].astype(int)
        mean = rows.groupby("x")[[c for m in metrics for c in (m, f"{m}_lo", f"{m}_hi")]].mean().reset_index()
        ax.set_xticks(mean.x.tolist())
        for m in metrics:
            line = ax.errorbar(
                mean.x,
                mean[m],
                yerr=[(mean[m] - mean[f"{m}_lo"]).clip(lower=0), (mean[f"{m}_hi"] - mean[m]).clip(lower=0)],
                marker="o",
                capsize=3,
                label=m,
            )
            if len(base) and base[m].notna().all():
                ax.axhline(float(base[m].iloc[0]), ls="--", color=line[0].get_color(), alpha=0.6)
    ax.set_xlabel("bias layer (0-based block; dashed: no bias)")
    ax.set_ylabel("rate on held-out concepts")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return plots.save(fig, path, title)


def _annotate_children(
    cfg: SteeringVectorConfig, run_ids: dict[str, Any], before: dict[str, float], verdicts: dict[str, Any]
) -> None:
    """Each arm's child run gets the baseline's rates as `before/*`, the verdict flags as tags, verdict.txt."""
    from lab import tracking

    for arm, rid in run_ids.items():
        if not rid or arm not in verdicts:
            continue
        ref = tracking.RunRef(str(cfg.tracking.uri), rid)
        tracking.log_to_run(ref, {f"before/{m}": before.get(m, math.nan) for m in SHOWN})
        tracking.tag_run(ref, {f"verdict.{k}": v for k, v in verdicts[arm].items() if k != "lines"})
        text = Path(cfg.output_dir) / "arms" / arm / "verdict.txt"
        text.write_text("\n".join(verdicts[arm]["lines"]) + "\n")
        tracking.log_artifacts_to_run(ref, text)


if __name__ == "__main__":
    raise SystemExit(main())
