"""Bidirectional injection: `python -m jobs.bidirectional --config configs/bidirectional-demo.yaml`.

Reads a geometry job's stored outputs (`geometry`: its output_dir or MLflow run id — vectors, per-concept rates,
the split threshold τ, layer and strength), pairs concepts within success–success and failure–failure as the paper's
code does (similar projection on the ridge direction, each concept once, ≤ max_pairs; analysis/pairs.py), injects
A − B (judged for A) and B − A (judged for B) at the sweep's layer with the same strength (relative: ‖s·(A − B)‖ =
the relative strength × mean ‖resid‖), and reports per pair the detection rate of each sign and per group the share
of pairs detected both ways (rate > τ both ways). Parquet in <output_dir>/trials, CSVs + a bar plot in
<output_dir>/report, one MLflow run.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jobs.cli import Job, configure
from lab.errors import LabError
from lab.experiments.concept_injection import InjectionConfig


@dataclass(frozen=True)
class BidirectionalConfig(InjectionConfig):
    output_dir: str = field(default="results/bidirectional", metadata={"help": "trials/ (Parquet) and report/"})
    geometry: str = field(default="", metadata={"help": "a geometry job's output_dir (or analysis/ dir) or run id"})
    strength: float | None = field(default=None, metadata={"help": "override the sweep's strength (same mode)"})
    threshold: float | None = field(
        default=None,
        metadata={"help": "max |Δ ridge projection| of a pair, in units of the projections' std (empty: no limit)"},
    )
    bucket: float | None = field(
        default=None,
        metadata={"help": "sort candidates by (⌊|Δproj|/bucket⌋, |Δrate|), bucket in std units (empty: by |Δproj|)"},
    )
    max_pairs: int = field(default=1000, metadata={"help": "per group (S-S, F-F)"})
    pair_units: Literal["std", "raw"] = field(
        default="std", metadata={"help": "threshold/bucket units: std of the projections, or raw (the paper's 200)"}
    )

    def source_dir(self) -> Path:
        """The geometry job's stored outputs (checked before any work)."""
        from analysis import geometry as geo
        from lab.run import tracking

        if not (g := self.geometry):
            raise LabError("set `geometry` to a geometry job's output_dir or MLflow run id")
        if not Path(g).exists() and not re.fullmatch(r"[0-9a-f]{32}", g):
            raise LabError(f"geometry: {g} not found (run jobs.geometry first, or give its MLflow run id)")
        src = Path(g) if Path(g).exists() else tracking.resolve_source(g, self.tracking.uri).directory
        adir = src / "analysis" if (src / "analysis" / geo.VECTORS).is_file() else src
        if not (adir / geo.RESULT).is_file():
            raise LabError(f"no geometry outputs in {src} (expected {geo.RESULT} and {geo.VECTORS})")
        return adir

    def planned(self) -> tuple[int, str]:  # --dry-run: the pairs the stored geometry gives, both signs each
        from analysis import pairs as pr

        n = len(pr.plan_pairs(self.source_dir(), self.threshold, self.bucket, self.max_pairs, self.pair_units).pairs)
        return (
            2 * n,
            f"injected differences (A − B and B − A of {n} pairs), each {self.sweep.trials_per_concept} trials",
        )


def main(argv: list[str] | None = None) -> int:
    """Inject A − B and B − A for matched pairs; exit 2 on bad input."""
    with Job(__name__, argv) as job:
        from analysis import pairs as pr
        from lab.experiments.concept_injection import model_key, run_sweep
        from lab.protocol.trials import vector_trials
        from lab.reporting import report
        from lab.run import store
        from lab.steer.concepts import ConceptVector

        check, planned = BidirectionalConfig.source_dir, BidirectionalConfig.planned
        cfg, args = configure(BidirectionalConfig, __doc__, argv, plan=planned, check=check)
        adir, out = cfg.source_dir(), Path(cfg.output_dir)
        plan = pr.plan_pairs(adir, cfg.threshold, cfg.bucket, cfg.max_pairs, cfg.pair_units)
        layer, vecs, tau = plan.layer, plan.vectors, plan.tau
        strength = cfg.strength if cfg.strength is not None else plan.strength
        counts = {grp: sum(p[0] == grp for p in plan.pairs) for grp in plan.groups}
        print(
            f"τ = {tau:.3f}; pairs: "
            + ", ".join(f"{k} {n} (of {len(plan.groups[k])} concepts)" for k, n in counts.items())
        )
        if not plan.pairs:
            raise LabError("no pairs could be matched (too few concepts per group)")
        # A − B is the bank vector "A-B", judged for A; ‖A − B‖ = ‖B − A‖: both signs get the same raw multiplier
        diffs = {
            (f"{x}-{z}", layer): ConceptVector(x, layer, (vecs[x] - vecs[z]).float(), plan.resid)
            for _, a, b in plan.pairs
            for x, z in ((a, b), (b, a))
        }
        specs = [(name, cv.concept, strength) for (name, _), cv in diffs.items()]
        sw = cfg.sweep
        trials = vector_trials(sw, model_key(cfg.model), specs, layer, plan.mode, sw.trials_per_concept, sw.samples)
        sub = dataclasses.replace(cfg, output_dir=str(out / "trials"))
        run_sweep(sub, progress=not args.quiet, trials=trials, extra_vectors=diffs)
        df = store.read(out / "trials")
        df = df[df.trial_id.isin({t.trial_id for t in trials})]
        det = df.assign(detected=df.detected.astype(float)).groupby("vector")["detected"].mean()
        per_pair = pr.per_pair_table(plan, det)
        summary = pr.summarize_pairs(per_pair, tau)
        rep = out / "report"
        rep.mkdir(parents=True, exist_ok=True)
        per_pair.to_csv(rep / "pairs.csv", index=False)
        summary.to_csv(rep / "summary.csv", index=False)
        print(*pr.summary_lines(summary), sep="\n")
        plot = pr.plot_pairs(
            summary, tau, rep / "bidirectional.png", f"{plan.model or cfg.model.name} L{layer}: A−B vs B−A"
        )
        keys = ("pairs", "a_minus_b", "b_minus_a", "both", "either", "both_lo", "both_hi")
        params = {"geometry": str(adir), "layer": layer, "strength": strength, "tau": tau, "threshold": cfg.threshold}
        run_id = report.log_run(
            cfg.tracking,
            params | {"bucket": cfg.bucket, "model": cfg.model.name, "output_dir": str(out.resolve())},
            {f"{r['group']}/{k}": r[k] for _, r in summary.iterrows() for k in keys},
            [rep / "pairs.csv", rep / "summary.csv", plot],
            tags={"job": "bidirectional", "results_dir": str(out.resolve())},
            run_name="bidirectional",
        )
        report.announce(run_id, cfg.tracking)
        print(f"report: {rep.resolve()}")
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
