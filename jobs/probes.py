"""Probes beyond yes/no: `python -m jobs.probes --config configs/probes-demo.yaml`.

Localisation (which of N sentences carried the injected thought?) and strength discrimination (which of passages
A/B carried the stronger one?), scored from next-token logits of the answer labels after a prefilled answer prefix
(lab/probes.py) — deterministic, no judge. Each with the concept vector and with random / norm-matched vector controls
and a no-injection control. Prints accuracy with Wilson 95 % intervals against chance, writes
<output_dir>/probes.parquet + report CSVs + a plot, and logs one MLflow run.

Runs in-process (one model replica, forward passes only; no generation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobs.cli import entry, load_config, parser
from lab.concepts import DEFAULT_TEMPLATE
from lab.config import ModelConfig, check_strength
from lab.errors import LabError
from lab.tracking import TrackingConfig


@dataclass(frozen=True)
class ProbesConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    probes: tuple[str, ...] = field(default=("localisation", "discrimination"), metadata={
        "help": "localisation and/or discrimination"})
    concepts: str | tuple[str, ...] = field(default="first:10", metadata={"help": "as sweep.concepts"})
    layers: tuple[int, ...] = field(default=(), metadata={"help": "empty = the model's defaults"})
    strengths: tuple[float, ...] = field(default=(), metadata={"help": "empty = the model's defaults"})
    strength_mode: Literal["raw", "relative", "default"] = "default"
    kinds: tuple[str, ...] = field(default=("injection", "control", "random", "norm_matched"), metadata={
        "help": "injection (concept vector), control (nothing injected), random, norm_matched"})
    n_sentences: int = field(default=5, metadata={"help": "localisation: numbered sentences (2..9)"})
    weak_fractions: tuple[float, ...] = field(default=(0.0, 0.5), metadata={
        "help": "discrimination: weaker passage strength = strength × fraction (0 = untouched)"})
    repeats: int = field(default=1, metadata={"help": "sentence draws per setting"})
    template: str = DEFAULT_TEMPLATE
    baseline: str = "baseline_words"
    seed: int = 0
    batch_size: int = 16
    threads: int = 2
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="probes"))
    output_dir: str = "results/probes"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        from lab.concepts import select_concepts
        from lab.probes import KINDS, PROBES

        select_concepts(self.concepts)
        bad = [p for p in self.probes if p not in PROBES] + [k for k in self.kinds if k not in KINDS]
        if bad or not self.probes or not self.kinds:
            raise LabError(f"probes must be from {PROBES} and kinds from {KINDS} (got {bad[0] if bad else 'none'})")
        if not 2 <= self.n_sentences <= 9:
            raise LabError("n_sentences must be in 2..9 (one digit token per answer)")
        for s in self.strengths:
            check_strength(s)
        if any(not 0 <= f < 1 for f in self.weak_fractions) or not self.weak_fractions:
            raise LabError("weak_fractions must be in [0, 1)")
        if self.repeats < 1 or self.batch_size < 1:
            raise LabError("repeats and batch_size must be >= 1")


def settings(cfg: ProbesConfig) -> Any:
    from lab.concepts import select_concepts
    from lab.models import spec_for
    from lab.probes import ProbeSettings
    from lab.trials import SweepConfig, resolve

    spec = spec_for(cfg.model.name)
    sweep = SweepConfig(concepts=cfg.concepts, layers=cfg.layers, strengths=cfg.strengths,
                        strength_mode=cfg.strength_mode)
    layers, strengths, mode = resolve(sweep, spec.default_layers if spec else (),
                                      spec.default_strengths if spec else (), spec.strength_mode if spec else "raw")
    if spec is not None and any(not 0 <= x < spec.n_layers for x in layers):
        raise LabError(f"a layer in {list(layers)} is out of range for {spec.name} (0..{spec.n_layers - 1})")
    return ProbeSettings(select_concepts(cfg.concepts), layers, strengths, mode, cfg.probes, cfg.kinds,
                         cfg.n_sentences, cfg.weak_fractions, cfg.repeats, cfg.seed)


@entry
def main(argv: list[str] | None = None) -> int:
    """Run the probes of --config; exit 0 on success, 2 on bad input."""
    import time

    import pandas as pd

    from lab import models, probes
    from lab.concepts import concept_vectors
    from lab.runner import VectorBank
    from lab.sweep import model_key
    from lab.tracking import check_uri, resolve_uri

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(ProbesConfig, args)
    st = settings(cfg)
    if cfg.tracking.enabled:
        check_uri(resolve_uri(cfg.tracking))
    t0 = time.time()
    models.threads(cfg.threads)
    lm = models.load(cfg.model)
    for layer in st.layers:
        lm.check_layer(layer)
    from lab.embedded import default_cache_dir

    cache = cfg.cache_dir or str(default_cache_dir() / "vectors")
    vectors, typical = concept_vectors(lm, st.concepts, st.layers, cfg.template, cfg.baseline, cache,
                                       model_key(cfg.model))
    rows = probes.run(lm, VectorBank(vectors, typical), st, cfg.batch_size, progress=not args.quiet)
    df = pd.DataFrame(rows)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.assign(model=cfg.model.name, adapter=cfg.model.adapter or "").to_parquet(out / "probes.parquet", index=False)
    print(f"probe trials: {len(df)} on {cfg.model.name} [{time.time() - t0:.0f} s]")
    report_and_log(cfg, df)
    return 0


def report_and_log(cfg: ProbesConfig, df: Any) -> Any:
    from lab import plots_grid, probes, tracking
    from lab.config import flatten, to_dict

    overall = probes.summarize(df, ("probe", "kind"))
    by_setting = probes.summarize(df, ("probe", "kind", "layer", "strength", "weak_fraction"))
    rep = Path(cfg.output_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    paths = [rep / "probes_overall.csv", rep / "probes_by_setting.csv", rep / "probes.png"]
    overall.to_csv(paths[0], index=False)
    by_setting.to_csv(paths[1], index=False)
    plot = by_setting.assign(label=[f"{r.kind} L{r.layer} s{r.strength:g}" + (f" w{r.weak_fraction:g}"
                                                                             if r.probe == "discrimination" else "")
                                    for r in by_setting.itertuples()])
    chance = {p: float(g["chance"].mean()) for p, g in df.groupby("probe")}
    plots_grid.accuracy_intervals(plot, "label", paths[2], chance=chance, group="probe",
                                  title=f"{cfg.model.name}: probe accuracy vs chance")
    run_id = None
    if cfg.tracking.enabled:
        with tracking.run(cfg.tracking, flatten(to_dict(cfg)), tags={"job": "probes", "model": cfg.model.name},
                          run_name=cfg.tracking.run_name or f"probes {cfg.model.name}") as active:
            for _, r in overall.iterrows():
                tracking.log_metrics({f"{r['probe']}/{r['kind']}/{k}": r[k] for k in
                                      ("accuracy", "accuracy_lo", "accuracy_hi", "n", "chance", "p_target",
                                       "top_answer_share")})
            for _, r in by_setting.iterrows():
                cell = f"{r['probe']}/{r['kind']}/L{r['layer']}_s{r['strength']:g}" + (
                    f"_w{r['weak_fraction']:g}" if r["probe"] == "discrimination" else "")
                tracking.log_metrics({f"{cell}/accuracy": r["accuracy"]})
            tracking.log_artifacts(*paths)
            run_id = active.info.run_id
    print(f"{'probe':<15} {'kind':<13} {'accuracy [95% CI]':<20} {'chance':>6} {'p(target)':>9} {'top-answer':>10}  n")
    for _, r in overall.iterrows():
        print(f"{r['probe']:<15} {r['kind']:<13} {r['accuracy']:.2f} [{r['accuracy_lo']:.2f},{r['accuracy_hi']:.2f}]"
              f"     {r['chance']:>6.2f} {r['p_target']:>9.3f} {r['top_answer_share']:>10.2f}  {int(r['n'])}")
    inj = overall[overall["kind"] == "injection"]
    for _, r in inj.iterrows():
        verdict = "above" if r["accuracy_lo"] > r["chance"] else ("below" if r["accuracy_hi"] < r["chance"] else
                                                                   "not distinguishable from")
        print(f"{r['probe']}: concept-vector accuracy is {verdict} chance ({r['chance']:.2f})")
    print(f"report:  {paths[0].resolve()}  {paths[2].resolve()}")
    if run_id:
        print(f"mlflow:  run {run_id} in experiment '{cfg.tracking.experiment}' at {tracking.resolve_uri(cfg.tracking)}")
    return overall


if __name__ == "__main__":
    raise SystemExit(main())
