"""Detection vs forced identification by layer: `python -m jobs.localisation --config <yaml>`.

A generation sweep (lab.experiments.concept_injection.run_sweep, forced identification on) over injection layers `first, first + stride, …`
(or the config's explicit `sweep.layers`), then per layer the detection rate and the forced-identification rate with
95 % intervals (one curve each) and their correlation across concepts (analysis/localisation.py); one MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from jobs.cli import Job, configure
from lab.errors import LabError
from lab.experiments.concept_injection import InjectionConfig, injection_of
from lab.protocol.trials import SweepConfig
from lab.run.tracking import TrackingConfig


@dataclass(frozen=True)
class LocalisationConfig(InjectionConfig):
    """Forced identification over every layer (configs/localisation-demo.yaml)."""

    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "forced_identification is always on"})
    first_layer: int = field(default=0, metadata={"help": "used when sweep.layers is empty: first injection layer"})
    layer_stride: int = field(default=1, metadata={"help": "used when sweep.layers is empty: every stride-th layer"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="localisation"), metadata={"help": "MLflow; one run"}
    )
    output_dir: str = field(default="results/localisation", metadata={"help": "Parquet dataset of the sweep + report/"})

    def __post_init__(self) -> None:
        if self.layer_stride < 1 or self.first_layer < 0:
            raise LabError("layer_stride must be >= 1 and first_layer >= 0")

    def injection(self) -> InjectionConfig:
        from lab.model.loading import spec_for

        layers = self.sweep.layers
        if not layers:
            spec = spec_for(self.model.name)
            if spec is None:
                raise LabError(f"{self.model.name} is not in the registry: give sweep.layers explicitly")
            layers = tuple(range(self.first_layer, spec.n_layers, self.layer_stride))
        return injection_of(self, sweep=replace(self.sweep, layers=layers, forced_identification=True))


def main(argv: list[str] | None = None) -> int:
    """Run the localisation sweep of --config; exit 0 on success, 2 on bad input."""
    with Job(__name__, argv) as job:
        import time

        from analysis import localisation as al
        from lab.config import flatten, to_dict
        from lab.experiments.concept_injection import plan, run_sweep
        from lab.reporting import report
        from lab.run import store

        cfg, args = configure(LocalisationConfig, __doc__, argv, plan=lambda c: plan(c.injection()).trials)
        inj = cfg.injection()
        t0 = time.time()
        res = run_sweep(inj, progress=not args.quiet)
        print(
            f"trials: {res['total']} ({res['new']} new, {res['skipped']} stored) over layers {list(inj.sweep.layers)}"
        )
        table = al.by_layer(store.read(cfg.output_dir))
        rep = Path(cfg.output_dir) / "report"
        rep.mkdir(parents=True, exist_ok=True)
        table.to_csv(rep / "localisation.csv", index=False)
        png = al.plot(table, rep / "localisation.png", f"{cfg.model.name}: detection vs forced identification")
        al.print_localisation_table(table)
        peak = table.loc[table["detection"].idxmax()] if len(table) else None
        if peak is not None:
            print(
                f"detection peaks at layer {int(peak['layer'])} ({peak['detection']:.2f} "
                f"[{peak['detection_lo']:.2f},{peak['detection_hi']:.2f}]); forced identification peaks at layer "
                f"{int(table.loc[table['forced_id'].idxmax(), 'layer'])}"
            )
        run_id = report.log_run(
            cfg.tracking,
            flatten(to_dict(cfg)),
            {},
            [rep / "localisation.csv", png],
            tags={"job": "localisation", "model": cfg.model.name},
            run_name=cfg.tracking.run_name or f"localisation {cfg.model.name}",
            stepped=[
                (r.layer, {"detection": r.detection, "forced_id": r.forced_id, "corr": r.corr})
                for r in table.itertuples()
            ],
        )
        report.announce(run_id, cfg.tracking)
        print(f"report:  {png.resolve()}  [{time.time() - t0:.0f} s]")
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
