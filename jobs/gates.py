"""Causal tests of gate features: `python -m jobs.gates --config configs/gates-demo.yaml`.

Per model (the config's `model`, then each of `compare`: a base vs instruct checkpoint, an abliterated adapter):
the dose response (resumable, as jobs.dose_response) → gate candidates (analysis.gates_report) → on the injection
prompts at `causal_strengths`: ablate the gate set (clamp to 0 via EditFeatures) in steered runs, and patch the
steered runs' gate activations onto unsteered runs (every position); the same with a random feature set of the same
size per layer as control. Readout: the Yes − No score and logit-based detection (score > 0, i.e. P(Yes) > P(No)),
with concept-bootstrap intervals (lab/experiments/gates.py; both passes through the experiment skeleton, in this
process or on Ray actors, `runner`). <output_dir>/<model>/causal.parquet + report/causal.csv, causal.png; one MLflow
run (a parent with a child per model when `compare` lists any) with the inverted-V plot and the causal Δ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobs.cli import Job, configure
from lab.config import ModelConfig
from lab.errors import LabError
from lab.experiments.dose_response import FeatureJobConfig
from lab.run.tracking import TrackingConfig

# each condition's columns of the patched-gates table logged to MLflow
_LOGGED = ("d_score", "d_score_lo", "d_score_hi", "d_detection", "d_detection_lo", "d_detection_hi", "detection", "n")


@dataclass(frozen=True)
class GatesConfig(FeatureJobConfig):
    compare: tuple[ModelConfig, ...] = field(default=(), metadata={"help": "more models/checkpoints, same tests"})
    gate_layers: tuple[int, ...] = field(default=(), metadata={"help": "where gates may sit; empty: any dose layer"})
    dla: Literal["lab", "paper"] = field(
        default="lab", metadata={"help": "gate ranking: lab = DLA through the final norm; paper = 07:461-472"}
    )
    causal_strengths: tuple[float, ...] = field(default=(0.2,), metadata={"help": "> 0, in dose.strength_mode units"})
    n_boot: int = field(default=2000, metadata={"help": "concept-bootstrap resamples for the causal Δ 95 % intervals"})
    seed: int = field(default=0, metadata={"help": "seed of the random control feature set and of the bootstrap"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="gates"), metadata={"help": "MLflow runs (one per model)"}
    )
    output_dir: str = field(default="results/gates", metadata={"help": "one subdirectory per model (name+adapter)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.causal_strengths or any(s <= 0 for s in self.causal_strengths):
            raise LabError("causal_strengths must be non-empty and > 0")
        if any(lay not in self.dose.layers for lay in self.gate_layers):
            raise LabError(f"gate_layers must be among dose.layers {list(self.dose.layers)}")


def one_model(cfg: GatesConfig, mc: ModelConfig, out: Path, quiet: bool) -> dict[str, Any]:
    from functools import partial

    import pandas as pd

    from analysis.gates_report import causal_plot, causal_table, gate_report, gate_verdict, random_set
    from lab.experiments import dose_response, gates as causal
    from training.transcoder.train import from_source

    dictionaries = partial(from_source, src=cfg.transcoders)
    dose_response.run_dose_response(cfg, mc, out, dictionaries, progress=not quiet)
    res = gate_report(out, cfg.gates_k, list(cfg.gate_layers) or None, dla=cfg.dla)
    gates = res["gates"]
    n_features = {int(k): t["n_features"] for k, t in res["meta"]["transcoders"].items()}
    sets = {
        "gates": {int(k): g["feature"].astype(int).tolist() for k, g in gates.groupby("layer")},
        "random": random_set(res["attribution"], gates, n_features, cfg.seed),
    }
    df = causal.run_gate_tests(cfg, mc, out, dictionaries, sets, cfg.causal_strengths, progress=not quiet)
    df.to_parquet(out / "causal.parquet", index=False)
    table = causal_table(df, cfg.n_boot, cfg.seed)
    rep = out / "report"
    table.to_csv(rep / "causal.csv", index=False)
    pd.DataFrame(
        [{"set": k, "layer": lay, "features": " ".join(map(str, f))} for k, s in sets.items() for lay, f in s.items()]
    ).to_csv(rep / "feature_sets.csv", index=False)
    plot = causal_plot(table, rep / "causal.png", f"{mc.name}: causal tests (gates vs random set)")
    lines = gate_verdict(res["summary"], table)
    return {
        "res": res,
        "table": table,
        "lines": lines,
        "paths": [*res["paths"], rep / "causal.csv", rep / "feature_sets.csv", plot],
    }


def planned(cfg: GatesConfig) -> tuple[int, str]:
    from lab.experiments.dose_response import dose_trials

    n = sum(len(dose_trials(cfg, mc)) for mc in (cfg.model, *cfg.compare))
    return n, f"dose-response concepts over {1 + len(cfg.compare)} model(s), then the causal gate tests"


def main(argv: list[str] | None = None) -> int:
    """Run the gate causal tests of --config; exit 0 on success, 2 on bad input."""
    with Job(__name__, argv) as job:
        import time
        from contextlib import nullcontext

        from lab.config import flatten, to_dict
        from lab.model import loading
        from lab.reporting import report

        cfg, args = configure(GatesConfig, __doc__, argv, plan=planned)
        loading.threads(cfg.threads)
        t0 = time.time()
        many = bool(cfg.compare)
        name = cfg.tracking.run_name or f"gates {cfg.model.name}"
        parent = (
            report.parent_run(cfg.tracking, flatten(to_dict(cfg)), {"job": "gates"}, name) if many else nullcontext()
        )
        with parent as top:
            for mc in (cfg.model, *cfg.compare):
                label = mc.name + (f"+{Path(mc.adapter).name}" if mc.adapter else "")
                out = Path(cfg.output_dir) / re.sub(r"[^A-Za-z0-9_.+-]", "_", label)
                r = one_model(cfg, mc, out, args.quiet)
                print(f"== {label} [{time.time() - t0:.0f} s]")
                print(r["table"].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
                print("\n".join(r["lines"]))
                (out / "report" / "verdict.txt").write_text("\n".join(r["lines"]) + "\n")
                causal = {
                    f"{row['condition'].replace(':', '/')}/{m}": row[m]
                    for _, row in r["table"].iterrows()
                    for m in _LOGGED
                }
                run_id = report.log_run(
                    cfg.tracking,
                    {"model": label} if many else flatten(to_dict(cfg)),
                    dict(r["res"]["summary"]) | causal,
                    [*r["paths"], out / "report" / "verdict.txt"],
                    tags={"job": "gates", "model": label},
                    run_name=f"gates {label}",
                    parent_run_id=top,
                )
                report.announce(run_id, cfg.tracking)
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
