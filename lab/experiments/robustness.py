"""Prompt-variant × dialogue-format grids (the robustness experiment): which cells to run, which of them apply to a
model, one row of rates per cell, and the per-cell metrics every child run logs (shared with jobs.stages).

Layouts: `paper` — every variant in the first format plus the first variant in every format (the paper ran its 7
variants in the standard chat format and its 6 formats with the original variant: 12 cells); `cross` — every pair.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.config import ModelConfig
from lab.errors import LabError
from lab.experiments.concept_injection import InjectionConfig, injection_of
from lab.protocol.trials import SweepConfig
from lab.run.tracking import TrackingConfig

GridCell = tuple[str, str]
LAYOUTS = ("paper", "cross")


def cells(variants: Sequence[str] = (), formats: Sequence[str] = (), layout: str = "paper") -> list[GridCell]:
    """The (variant, format) cells; empty lists mean the paper's variants / formats (lab/data/prompts.yaml)."""
    from lab.protocol.prompts import dialogue_format, paper_formats, paper_variants, variant

    vs, fs = list(variants) or paper_variants(), list(formats) or paper_formats()
    for v in vs:
        variant(v)
    for f in fs:
        dialogue_format(f)
    if len(set(vs)) != len(vs) or len(set(fs)) != len(fs):
        raise LabError("variants and formats must not repeat")
    if layout not in LAYOUTS:
        raise LabError(f"unknown grid layout '{layout}' (known: {', '.join(LAYOUTS)})")
    if layout == "cross":
        return [(v, f) for v in vs for f in fs]
    return [(v, fs[0]) for v in vs] + [(vs[0], f) for f in fs[1:]]


def skip_reasons(
    model: ModelConfig, grid: Sequence[GridCell], trial_numbers: int, forced: bool
) -> dict[GridCell, str | None]:
    """Per cell: None if its prompts render for this model, else why the cell is skipped (one line).

    Renders the real prompts with the model's tokenizer (no weights loaded). Without a tokenizer on this machine
    (a hub id only the cluster has), falls back to the registry: chat formats need `chat_template`.
    """
    from lab.model.loading import spec_for
    from lab.protocol.prompts import dialogue_format, render, tokenizer_model

    lm = tokenizer_model(model.name, model.cache_dir)
    out: dict[GridCell, str | None] = {}
    for v, f in grid:
        if lm is None:
            spec = spec_for(model.name)
            chat = dialogue_format(f).kind == "chat"
            out[(v, f)] = (
                f"format '{f}' needs a chat template; {model.name} has none"
                if chat and spec is not None and not spec.chat_template
                else None
            )
            continue
        try:
            for n in range(1, trial_numbers + 1):
                render(lm, v, f, n, False)
                if forced:
                    render(lm, v, f, n, True)
            out[(v, f)] = None
        except Exception as e:  # noqa: BLE001 - LabError, or a chat template refusing a role order
            out[(v, f)] = str(e).splitlines()[0] if str(e) else type(e).__name__
    return out


def metric_names(controls: Sequence[str], forced: bool) -> list[str]:
    """The rates every child run logs (each with `_lo`, `_hi`, `n_`, `trials_`), identical across children."""
    return ["tpr", "fpr", "introspection"] + [f"{c}_rate" for c in controls] + (["forced_id"] if forced else [])


def child_metrics(summary: dict[str, Any], controls: Sequence[str], forced: bool) -> dict[str, float]:
    """The report's metric names (lab.reporting.report.rate_metrics), every one present in every child (NaN if empty)."""
    from lab.reporting.report import rate_metrics

    out = {f"{m}{s}": float("nan") for m in metric_names(controls, forced) for s in ("", "_lo", "_hi")}
    return out | rate_metrics(summary, names=metric_names(controls, forced))


def cell_table(df: Any, reasons: dict[GridCell, str | None], cell_ids: dict[GridCell, list[str]]) -> Any:
    """One row per cell: variant, format, status (ok | skipped), reason, and the `summarize` rates."""
    import pandas as pd

    from lab.reporting import metrics

    rows = []
    for (v, f), reason in reasons.items():
        row: dict[str, Any] = {
            "prompt_variant": v,
            "dialogue_format": f,
            "status": "ok" if reason is None else "skipped",
            "reason": reason or "",
        }
        if reason is None:
            row |= metrics.summarize(df[df["trial_id"].isin(set(cell_ids[(v, f)]))])
        rows.append(row)
    return pd.DataFrame(rows)


def format_grid(table: Any, shown: Sequence[str]) -> str:
    """The printed grid: one line per cell, each rate with its interval and n (distinct generations), then what n
    is and the reading (lab.reporting.report)."""
    from lab.reporting.report import ci, interpret_cells, n_note

    lines = [f"{'variant':<12} {'format':<15} " + "  ".join(f"{c:<24}" for c in shown)]
    for _, r in table.iterrows():
        head = f"{r['prompt_variant']:<12} {r['dialogue_format']:<15} "
        lines.append(
            head
            + (
                f"skipped: {r['reason']}"
                if r["status"] != "ok"
                else "  ".join(f"{ci(r, c, with_n=True):<24}" for c in shown)
            )
        )
    ok = table[table["status"] == "ok"]
    lines.append(n_note(ok.to_dict("records"), shown))
    lines += interpret_cells(ok, ("prompt_variant", "dialogue_format"))
    return "\n".join(lines)


@dataclass(frozen=True)
class RobustnessConfig(InjectionConfig):
    """The robustness grid (configs/robustness-demo.yaml). `sweep.prompt_variant/dialogue_format` are ignored."""

    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "trials per cell; variant/format unused"})
    variants: tuple[str, ...] = field(default=(), metadata={"help": "prompt variants; empty = the paper's 7"})
    formats: tuple[str, ...] = field(default=(), metadata={"help": "dialogue formats; empty = the paper's 6"})
    layout: str = field(
        default="paper",
        metadata={"help": "paper: variants in the first format + the first variant in every format; cross: every pair"},
    )
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="robustness"), metadata={"help": "a child run per cell"}
    )
    output_dir: str = field(default="results/robustness", metadata={"help": "one Parquet dataset for all cells"})

    def __post_init__(self) -> None:
        self.cells()

    def cells(self) -> list[GridCell]:
        return cells(self.variants, self.formats, self.layout)

    def injection(self, variant: str = "original", fmt: str = "standard") -> InjectionConfig:
        """The single-cell sweep config (what `jobs.concept_injection` would run for this cell)."""
        return injection_of(self, sweep=dataclasses.replace(self.sweep, prompt_variant=variant, dialogue_format=fmt))
