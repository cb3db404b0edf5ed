"""Concept-vector geometry vs detection: `python -m jobs.geometry --config configs/geometry-demo.yaml`.

From a stored sweep (`source`: a Parquet dir or an MLflow run id; empty: run the config's own sweep into
<output_dir>/sweep first) and the concept vectors at its layer: per-concept detection rates, the success/failure
split, mean-difference direction, PCA, cosines with the refusal direction, nested-CV ridge (analysis/geometry.py).
Then new injections of each vector's projection on the mean-difference direction and of its residual (and the
full vector, as a check against the stored sweep), at the raw multiplier the full vector had, with TPR for each.
The vectors, the refusal direction and the rates are stored in <output_dir>/analysis, so
`python -m analysis.geometry --run <output_dir or MLflow run id>` reruns without a model. The model-side steps (the
sweeps, vectors and refusal direction: lab.experiments.refusal.vectors_and_direction) run with `runner.num_actors: 0`
in this process on one shared model, else on Ray actors (lab.run.experiment.on_replica): the driver loads no model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jobs.cli import Job, configure
from lab.errors import LabError
from lab.experiments.concept_injection import InjectionConfig


@dataclass(frozen=True)
class GeometryConfig(InjectionConfig):
    output_dir: str = field(default="results/geometry", metadata={"help": "analysis/, parts/, report/ (+ sweep/)"})
    source: str = field(default="", metadata={"help": "stored sweep: Parquet dir or MLflow run id; empty: run `sweep`"})
    layer: int | None = field(default=None, metadata={"help": "the sweep layer to analyse (empty: its only layer)"})
    strength: float | None = field(default=None, metadata={"help": "the sweep strength (empty: its only strength)"})
    tau: float | None = field(default=None, metadata={"help": "fixed success threshold; empty: CV LDA macro-F1"})
    split: Literal["detection", "paper"] = field(default="detection", metadata={"help": "paper: τ over 2 metrics"})
    ridge: Literal["lab", "paper"] = field(default="lab", metadata={"help": "paper: mean fold R², global centring"})
    refusal: str = field(default="", metadata={"help": "refusal_directions.safetensors; empty: compute (position -2)"})
    parts: tuple[str, ...] = field(default=("full", "proj", "resid"), metadata={"help": "new injections"})
    part_trials: int = field(default=2, metadata={"help": "trial numbers per concept for the part injections"})

    def __post_init__(self) -> None:
        if bad := set(self.parts) - {"full", "proj", "resid"}:
            raise LabError(f"unknown part '{min(bad)}' (known: full, proj, resid)")

    def planned(self) -> tuple[int, str]:  # --dry-run: the sweep (unless stored), then the part injections
        from lab.experiments.concept_injection import plan

        n = 0 if self.source else len(plan(self).trials)
        return n, f"sweep trials, then part injections ({', '.join(self.parts)}) of each concept"


def main(argv: list[str] | None = None) -> int:
    """Geometry of the concept vectors of a stored sweep, plus part injections; exit 2 on bad input."""
    with Job(__name__, argv) as job:
        import numpy as np
        import torch

        from analysis import geometry as geo
        from lab.experiments import refusal
        from lab.experiments.concept_injection import model_key, run_sweep, vector_cache_dir
        from lab.model.loading import load, threads
        from lab.protocol.trials import vector_trials
        from lab.reporting import report
        from lab.run import store, tracking
        from lab.run.experiment import on_replica
        from lab.steer.concepts import ConceptVector
        from lab.steer.injection import Strength

        rerun = "python -m analysis.geometry --run {output}"
        cfg, args = configure(GeometryConfig, __doc__, argv, plan=GeometryConfig.planned, rerun=rerun)
        out = Path(cfg.output_dir)
        threads(cfg.runner.threads)
        lm = load(cfg.model) if cfg.runner.num_actors == 0 else None  # in process: one model for every step
        src = cfg.source
        if not src:
            src = str(out / "sweep")
            run_sweep(dataclasses.replace(cfg, output_dir=src), progress=not args.quiet, lm=lm)
        elif not Path(src).exists():
            src = str(tracking.resolve_source(src, cfg.tracking.uri).directory)
        df = store.read(src)
        inj = df[(df.kind == "injection") & ~df.forced.astype(bool)]
        layer, strength = geo.sweep_cell(inj, cfg.layer, cfg.strength)
        rates = geo.detection_rates(df, layer, strength)
        concepts = list(rates.concept)
        given = refusal.RefusalDirections.load(cfg.refusal).layer(layer) if cfg.refusal else None
        harmful, _ = refusal.split_heldout(refusal.instructions("harmful"))
        # its refusal direction at the layer, unless given
        lists = None if cfg.refusal else (harmful, refusal.instructions("harmless"))
        cache = vector_cache_dir(cfg)
        step = (concepts, layer, cfg.sweep.template, cfg.sweep.baseline, cache, model_key(cfg.model), lists)
        whole = dataclasses.replace(cfg.model, shard="none", workers_per_replica=1, offload=False)  # as the driver had
        vecs, ref = on_replica(whole, cfg.runner, refusal.vectors_and_direction, *step, lm=lm)  # one actor, or lm
        ref = given if given is not None else ref
        V = {c: vecs[(c, layer)].vector for c in concepts}
        adir = geo.save_inputs(out / "analysis", V, rates, ref, layer)
        X = torch.stack([V[c] for c in concepts]).double().numpy()
        comb = rates["combined"].to_numpy(float) if "combined" in rates else None
        g, dirs = geo.analyse(
            X, rates.rate.to_numpy(float), concepts, ref.double().numpy(), cfg.tau, 10, 42, cfg.split, cfg.ridge, comb
        )
        mode = inj[inj.layer == layer].strength_mode.iloc[0]
        resid = vecs[(concepts[0], layer)].resid_norm
        g.extra = dict(
            layer=layer, strength=strength, strength_mode=mode, resid_norm=resid, model=cfg.model.name, source=src
        )
        geo.write_result(g, adir)
        print(*geo.report_lines(g)[:-1], sep="\n")
        # new injections: projection on the mean-diff direction, the residual, and the full vector (same raw multiplier)
        full = torch.stack([V[c] for c in concepts])
        proj, res = geo.decompose(full, torch.as_tensor(dirs["meandiff"], dtype=torch.float32))
        parts = {"full": full, "proj": proj, "resid": res}
        raws = [Strength(strength, mode).raw(float(V[c].norm()), resid) for c in concepts]
        specs = [(f"{c}|{p}", c, float(raws[i])) for p in cfg.parts for i, c in enumerate(concepts)]
        trials = vector_trials(cfg.sweep, model_key(cfg.model), specs, layer, "raw", cfg.part_trials)
        extra = {
            (f"{c}|{p}", layer): ConceptVector(c, layer, parts[p][i].float(), resid)
            for p in cfg.parts
            for i, c in enumerate(concepts)
        }
        sub = dataclasses.replace(cfg, output_dir=str(out / "parts"))
        run_sweep(sub, progress=not args.quiet, lm=lm, trials=trials, extra_vectors=extra)
        pdf = store.read(out / "parts")
        pdf = pdf[pdf.trial_id.isin({t.trial_id for t in trials})]
        if "full" in cfg.parts:
            print(geo.harness_check(pdf, inj[(inj.layer == layer) & np.isclose(inj.strength, strength)]))
        table = geo.part_table(pdf, cfg.parts)
        rel = {p: float(np.mean(parts[p].norm(dim=1).double().numpy() * np.array(raws))) / resid for p in cfg.parts}
        print(*geo.part_lines(table, rel), sep="\n")
        rep = out / "report"
        rep.mkdir(parents=True, exist_ok=True)
        table.to_csv(rep / "parts.csv", index=False)
        rates.to_csv(rep / "rates.csv", index=False)
        plots = geo.figures(g, dirs, table, concepts, rep, f"{cfg.model.name} L{layer} s{strength:g}")
        params = {"source": src, "layer": layer, "strength": strength, "tau": g.tau, "parts": ",".join(cfg.parts)}
        run_id = report.log_run(
            cfg.tracking,
            params | {"model": cfg.model.name, "output_dir": str(out.resolve())},
            geo.metrics_of(g, table),
            [*plots, rep / "parts.csv", adir / geo.RESULT],
            tags={"job": "geometry", "results_dir": str(out.resolve())},
            run_name="geometry",
        )
        report.announce(run_id, cfg.tracking)
        print(f"report: {rep.resolve()}  (rerun: python -m analysis.geometry --run {out})")
        print(geo.report_lines(g)[-1])
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
