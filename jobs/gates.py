"""Causal tests of gate features: `python -m jobs.gates --config configs/gates-demo.yaml`.

Per model (the config's `model`, then each of `compare`: a base vs instruct checkpoint, an abliterated adapter):
the dose response (resumable, as jobs.dose_response) → gate candidates (analysis.gates_report) → on the injection
prompts at `causal_strengths`: ablate the gate set (clamp to 0 via EditFeatures) in steered runs, and patch the
steered runs' gate activations onto unsteered runs (every position); the same with a random feature set of the same
size per layer as control. Readout: the Yes − No score and logit-based detection (score > 0, i.e. P(Yes) > P(No)),
with concept-bootstrap intervals. <output_dir>/<model>/causal.parquet + report/causal.csv, causal.png; one MLflow run
(a parent with a child per model when `compare` lists any) with the inverted-V plot and the causal Δ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.feature_setup import TranscoderSource, setup
from jobs.cli import entry, load_config, parser
from lab.concepts import DEFAULT_TEMPLATE
from lab.config import ModelConfig
from lab.errors import LabError
from lab.features import DoseConfig
from lab.tracking import TrackingConfig


@dataclass(frozen=True)
class GatesConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    compare: tuple[ModelConfig, ...] = field(default=(), metadata={"help": "more models/checkpoints, same tests"})
    dose: DoseConfig = field(default_factory=DoseConfig)
    transcoders: TranscoderSource = field(default_factory=TranscoderSource)
    gates_k: int = 20
    gate_layers: tuple[int, ...] = field(default=(), metadata={"help": "where gates may sit; empty: any dose layer"})
    causal_strengths: tuple[float, ...] = field(default=(0.2,), metadata={"help": "> 0, in dose.strength_mode units"})
    n_boot: int = 2000
    seed: int = 0
    template: str = DEFAULT_TEMPLATE
    baseline: str = "baseline_words"
    threads: int = 2
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="gates"))
    output_dir: str = "results/gates"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.gates_k < 1 or not self.causal_strengths or any(s <= 0 for s in self.causal_strengths):
            raise LabError("gates_k must be >= 1 and causal_strengths non-empty and > 0")
        if any(lay not in self.dose.layers for lay in self.gate_layers):
            raise LabError(f"gate_layers must be among dose.layers {list(self.dose.layers)}")


def one_model(cfg: GatesConfig, mc: ModelConfig, out: Path, quiet: bool) -> dict[str, Any]:
    import pandas as pd
    import torch

    from analysis import gates_plots
    from analysis.gates_report import analyse, causal_table, random_set, verdict
    from lab.features import gate_effects, run_dose_response, trial_prompts

    d = cfg.dose
    lm, vectors, tcs = setup(
        mc, d.concepts, d.inject_layer, d.layers, cfg.transcoders, cfg.template, cfg.baseline, cfg.cache_dir
    )
    run_dose_response(lm, d, vectors, tcs, out)
    res = analyse(out, cfg.gates_k, list(cfg.gate_layers) or None)
    gates = res["gates"]
    sets = {
        "gates": {int(k): g["feature"].astype(int).tolist() for k, g in gates.groupby("layer")},
        "random": random_set(res["attribution"], gates, {k: t.n_features for k, t in tcs.items()}, cfg.seed),
    }
    prompts = trial_prompts(lm, d.trial_numbers, d.prompt_variant, d.dialogue_format)
    plan = [(c, s, p) for c in vectors for s in cfg.causal_strengths for p in prompts]
    scores = []
    for b in range(0, len(plan), d.batch_size):
        chunk = plan[b : b + d.batch_size]
        raw = [
            s * (1.0 if d.strength_mode == "raw" else vectors[c].resid_norm / max(vectors[c].norm, 1e-12))
            for c, s, _ in chunk
        ]
        eff = gate_effects(
            lm,
            [p.ids for *_, p in chunk],
            [p.start for *_, p in chunk],
            torch.stack([vectors[c].vector for c, *_ in chunk]),
            raw,
            d.inject_layer,
            tcs,
            sets,
        )
        scores += [
            {"concept": c, "strength": s, "trial_number": p.trial_number, "condition": k, "yes_no": float(v[i])}
            for k, v in eff.items()
            for i, (c, s, p) in enumerate(chunk)
        ]
    df = pd.DataFrame(scores)
    df.to_parquet(out / "causal.parquet", index=False)
    table = causal_table(df, cfg.n_boot, cfg.seed)
    rep = out / "report"
    table.to_csv(rep / "causal.csv", index=False)
    pd.DataFrame(
        [{"set": k, "layer": lay, "features": " ".join(map(str, f))} for k, s in sets.items() for lay, f in s.items()]
    ).to_csv(rep / "feature_sets.csv", index=False)
    plot = gates_plots.causal_plot(table, rep / "causal.png", f"{mc.name}: causal tests (gates vs random set)")
    lines = verdict(res["summary"], table)
    return {
        "res": res,
        "table": table,
        "lines": lines,
        "paths": [*res["paths"], rep / "causal.csv", rep / "feature_sets.csv", plot],
    }


@entry
def main(argv: list[str] | None = None) -> int:
    """Run the gate causal tests of --config; exit 0 on success, 2 on bad input."""
    import time
    from contextlib import nullcontext

    from lab import models, tracking
    from lab.config import flatten, to_dict

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(GatesConfig, args)
    if cfg.tracking.enabled:
        tracking.check_uri(tracking.resolve_uri(cfg.tracking))
    models.threads(cfg.threads)
    t0 = time.time()
    many = bool(cfg.compare)
    parent = (
        tracking.run(
            cfg.tracking,
            flatten(to_dict(cfg)),
            tags={"job": "gates"},
            run_name=cfg.tracking.run_name or f"gates {cfg.model.name}",
        )
        if many and cfg.tracking.enabled
        else nullcontext(None)
    )
    with parent as top:
        for mc in (cfg.model, *cfg.compare):
            label = mc.name + (f"+{Path(mc.adapter).name}" if mc.adapter else "")
            out = Path(cfg.output_dir) / re.sub(r"[^A-Za-z0-9_.+-]", "_", label)
            r = one_model(cfg, mc, out, args.quiet)
            print(f"== {label} [{time.time() - t0:.0f} s]")
            print(r["table"].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
            print("\n".join(r["lines"]))
            if cfg.tracking.enabled:
                params = {"model": label} if many else flatten(to_dict(cfg))
                with tracking.run(
                    cfg.tracking,
                    params,
                    tags={"job": "gates", "model": label},
                    run_name=f"gates {label}",
                    parent_run_id=top.info.run_id if top else None,
                ) as run:
                    tracking.log_metrics(r["res"]["summary"])
                    tracking.log_metrics(
                        {
                            f"{row['condition'].replace(':', '/')}/{m}": row[m]
                            for _, row in r["table"].iterrows()
                            for m in (
                                "d_score",
                                "d_score_lo",
                                "d_score_hi",
                                "d_detection",
                                "d_detection_lo",
                                "d_detection_hi",
                                "detection",
                                "n",
                            )
                        }
                    )
                    (out / "report" / "verdict.txt").write_text("\n".join(r["lines"]) + "\n")
                    tracking.log_artifacts(*r["paths"], out / "report" / "verdict.txt")
                    print(f"mlflow:  run {run.info.run_id} in experiment '{cfg.tracking.experiment}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
