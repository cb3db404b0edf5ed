"""Robustness grid: `python -m jobs.robustness --config configs/robustness-demo.yaml`.

Sweeps prompt variants × dialogue formats (lab/data/prompts.yaml) with the same concepts, layers, strengths and
paired controls in every cell. All cells go to one Parquet dataset (trial ids carry the variant and format, so cells
never collide, and a rerun skips what is stored) and one pool of Ray actors. A format that cannot apply to the model
(a chat format on a model without a chat template, a role order the template refuses) is reported as skipped.

MLflow: one parent run (config, cell table, grid plot of TPR/FPR with 95 % intervals) and one child run per applied
(variant, format) cell, all children with the same metric names (tpr, fpr, introspection, …) so they compare in the UI.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.cli import entry, load_config, parser
from lab.config import ModelConfig
from lab.errors import LabError
from lab.parallel import RunnerConfig
from lab.sweep import InjectionConfig, JudgeConfig
from lab.tracking import TrackingConfig
from lab.trials import SweepConfig, Trial


@dataclass(frozen=True)
class RobustnessConfig:
    """The robustness grid (configs/robustness-demo.yaml). `sweep.prompt_variant/dialogue_format` are ignored."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    variants: tuple[str, ...] = field(default=(), metadata={"help": "prompt variants; empty = all (prompts.yaml)"})
    formats: tuple[str, ...] = field(default=(), metadata={"help": "dialogue formats; empty = all (prompts.yaml)"})
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="robustness"))
    output_dir: str = field(default="results/robustness", metadata={"help": "one Parquet dataset for all cells"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-activation cache (see InjectionConfig)"})

    def __post_init__(self) -> None:
        from lab.prompts import dialogue_format, variant

        for v in self.variants:
            variant(v)
        for f in self.formats:
            dialogue_format(f)
        if len(set(self.variants)) != len(self.variants) or len(set(self.formats)) != len(self.formats):
            raise LabError("variants and formats must not repeat")

    def cells(self) -> list[tuple[str, str]]:
        from lab.prompts import formats, variants

        vs = self.variants or tuple(variants())
        fs = self.formats or tuple(formats())
        return [(v, f) for v in vs for f in fs]

    def injection(self, variant: str = "original", fmt: str = "standard") -> InjectionConfig:
        """The single-cell sweep config (what `jobs.concept_injection` would run for this cell)."""
        sweep = dataclasses.replace(self.sweep, prompt_variant=variant, dialogue_format=fmt)
        return InjectionConfig(model=self.model, sweep=sweep, runner=self.runner, judge=self.judge,
                               tracking=self.tracking, output_dir=self.output_dir, cache_dir=self.cache_dir)


# ---------------------------------------------------------------------------------------------------------------
# which cells apply


def prompt_model(model: ModelConfig) -> Any:
    """A `LoadedModel` with the tokenizer only (no weights): enough for `lab.prompts.render`. None if no tokenizer."""
    from transformers import AutoTokenizer

    from lab.models import LoadedModel, ModelSpec, spec_for

    spec = spec_for(model.name)
    if spec is not None and spec.source == "embedded":
        from lab.embedded import ensure_converted

        path = str(ensure_converted(model.cache_dir))
    elif spec is not None:
        path = spec.source
    else:
        path = model.name
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        return None
    if spec is None:
        spec = ModelSpec(model.name, path, 0, 0, 0.0, (), (), "raw", chat_template=tok.chat_template is not None)
    return LoadedModel(model=None, tokenizer=tok, spec=spec, name=model.name)


def skip_reasons(cfg: RobustnessConfig) -> dict[tuple[str, str], str | None]:
    """Per cell: None if its prompts render for this model, else why the cell is skipped (one line).

    Renders the real prompt with the model's tokenizer (no weights loaded). Without a tokenizer on this machine
    (a hub id only the cluster has), falls back to the registry: chat formats need `chat_template`.
    """
    from lab.models import spec_for
    from lab.prompts import dialogue_format, render

    lm = prompt_model(cfg.model)
    out: dict[tuple[str, str], str | None] = {}
    for v, f in cfg.cells():
        if lm is None:
            spec = spec_for(cfg.model.name)
            chat = dialogue_format(f).kind == "chat"
            out[(v, f)] = (f"format '{f}' needs a chat template; {cfg.model.name} has none"
                           if chat and spec is not None and not spec.chat_template else None)
            continue
        try:
            for n in range(1, cfg.sweep.trials_per_concept + 1):
                render(lm, v, f, n, False)
                if cfg.sweep.forced_identification:
                    render(lm, v, f, n, True)
            out[(v, f)] = None
        except Exception as e:  # noqa: BLE001 - LabError, or a chat template refusing a role order
            out[(v, f)] = str(e).splitlines()[0] if str(e) else type(e).__name__
    return out


# ---------------------------------------------------------------------------------------------------------------
# metrics shared with jobs.stages


def metric_names(sweep: SweepConfig) -> list[str]:
    """The rates every child run logs (each with `_lo`, `_hi`, `n_`), identical across children of one job."""
    names = ["tpr", "fpr", "introspection"] + [f"{c}_rate" for c in sweep.controls]
    return names + (["forced_id"] if sweep.forced_identification else [])


def child_metrics(summary: dict[str, Any], sweep: SweepConfig) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in metric_names(sweep):
        for k in (m, f"{m}_lo", f"{m}_hi", f"n_{m}"):
            out[k] = summary.get(k, float("nan"))
    out["balanced_accuracy"] = summary.get("balanced_accuracy", float("nan"))
    out["n_unparsed"] = summary.get("n_unparsed", 0)
    return out


def ci(r: Any, k: str) -> str:
    v = r.get(k, float("nan")) if hasattr(r, "get") else r[k]
    return "   n/a           " if v != v else f"{v:.2f} [{r[k + '_lo']:.2f},{r[k + '_hi']:.2f}]"


# ---------------------------------------------------------------------------------------------------------------
# the job


@entry
def main(argv: list[str] | None = None) -> int:
    """Run the variant × format grid of --config; exit 0 on success, 2 on bad input."""
    import time

    from jobs.concept_injection import preflight
    from lab.sweep import plan, run_sweep

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(RobustnessConfig, args)
    base = cfg.injection()
    preflight(base)
    t0 = time.time()
    reasons = skip_reasons(cfg)
    trials: list[Trial] = []
    cell_ids: dict[tuple[str, str], list[str]] = {}
    for cell, reason in reasons.items():
        if reason is None:
            ts = plan(cfg.injection(*cell)).trials
            cell_ids[cell] = [t.trial_id for t in ts]
            trials.extend(ts)
    for (v, f), reason in reasons.items():
        if reason is not None:
            print(f"skipped: {v} × {f}: {reason}")
    if not trials:
        raise LabError("no (variant, format) cell applies to this model; nothing to run")
    res = run_sweep(base, progress=not args.quiet, trials=trials)
    print(f"cells: {len(cell_ids)} run, {len(reasons) - len(cell_ids)} skipped; trials: {res['total']} "
          f"({res['new']} generated now, {res['skipped']} already stored) judge: {res['judge']} "
          f"[{time.time() - t0:.0f} s]")
    report_and_log(cfg, reasons, cell_ids)
    return 0


def cell_table(cfg: RobustnessConfig, reasons: dict[tuple[str, str], str | None],
               cell_ids: dict[tuple[str, str], list[str]]) -> Any:
    """One row per cell: variant, format, status (ok | skipped), reason, and the `summarize` rates."""
    import pandas as pd

    from lab import metrics, store

    df = store.read(cfg.output_dir)
    rows = []
    for (v, f), reason in reasons.items():
        row: dict[str, Any] = {"prompt_variant": v, "dialogue_format": f,
                               "status": "ok" if reason is None else "skipped", "reason": reason or ""}
        if reason is None:
            sub = df[df["trial_id"].isin(set(cell_ids[(v, f)]))]
            row |= metrics.summarize(sub)
        rows.append(row)
    return pd.DataFrame(rows)


def report_and_log(cfg: RobustnessConfig, reasons: dict[tuple[str, str], str | None],
                   cell_ids: dict[tuple[str, str], list[str]]) -> Any:
    """cells.csv + grid plot in <output_dir>/report, the MLflow parent/child runs, and a printed grid."""
    from lab import plots_grid, tracking
    from lab.config import flatten, to_dict

    table = cell_table(cfg, reasons, cell_ids)
    rep = Path(cfg.output_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    csv, png = rep / "cells.csv", rep / "grid.png"
    table.to_csv(csv, index=False)
    rows = list(dict.fromkeys(v for v, _ in reasons))
    cols = list(dict.fromkeys(f for _, f in reasons))
    shown = ["tpr", "fpr"] + [f"{c}_rate" for c in cfg.sweep.controls][:1]
    plots_grid.category_grid(table, "prompt_variant", "dialogue_format", png, metrics=shown, rows=rows, cols=cols,
                             title=f"{cfg.model.name}: prompt variant × dialogue format")
    parent_id = None
    if cfg.tracking.enabled:
        ok = table[table["status"] == "ok"]
        skipped = table[table["status"] != "ok"]
        tags = {"job": "robustness", "model": cfg.model.name}
        with tracking.run(cfg.tracking, flatten(to_dict(cfg)), tags=tags,
                          run_name=cfg.tracking.run_name or f"robustness {cfg.model.name}") as parent:
            parent_id = parent.info.run_id
            for _, r in ok.iterrows():
                v, f = r["prompt_variant"], r["dialogue_format"]
                with tracking.run(cfg.tracking, flatten(to_dict(cfg.injection(v, f))), run_name=f"{v} × {f}",
                                  tags={"job": "robustness", "prompt_variant": v, "dialogue_format": f,
                                        "model": cfg.model.name}, parent_run_id=parent_id):
                    tracking.log_metrics(child_metrics(r.to_dict(), cfg.sweep))
            tracking.set_tags({"skipped_cells": "; ".join(f"{a}×{b}" for a, b in
                                                          zip(skipped["prompt_variant"], skipped["dialogue_format"]))
                               or "none"})
            tracking.log_metrics({"cells_run": len(ok), "cells_skipped": len(skipped)})
            tracking.log_artifacts(csv, png)
    print_grid(table, rows, cols)
    print(f"results: {Path(cfg.output_dir).resolve()}")
    print(f"report:  {csv.resolve()}  {png.resolve()}")
    if parent_id:
        print(f"mlflow:  parent run {parent_id} ({int((table['status'] == 'ok').sum())} child runs) in experiment "
              f"'{cfg.tracking.experiment}' at {tracking.resolve_uri(cfg.tracking)}")
    return table


def print_grid(table: Any, rows: list[str], cols: list[str]) -> None:
    ctrl = next((c for c in table.columns if c.endswith("_rate") and not c.startswith(("n_",))), None)
    cols_shown = ["tpr", "fpr"] + ([ctrl] if ctrl else [])
    print(f"{'variant':<12} {'format':<15} " + "  ".join(f"{c:<17}" for c in cols_shown) + "  n_inj")
    for _, r in table.iterrows():
        if r["status"] != "ok":
            print(f"{r['prompt_variant']:<12} {r['dialogue_format']:<15} skipped: {r['reason']}")
            continue
        print(f"{r['prompt_variant']:<12} {r['dialogue_format']:<15} "
              + "  ".join(f"{ci(r, c):<17}" for c in cols_shown) + f"  {int(r['n_tpr'])}")


if __name__ == "__main__":
    raise SystemExit(main())
