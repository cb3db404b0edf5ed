"""Dose calibration: `python -m jobs.calibrate_dose --config configs/calibrate-dose-demo.yaml`.

Per layer, sweeps injection strengths (a concept-injection sweep with random-vector controls), then finds where the
injected answers stop being coherent and where detection starts (lab.experiments.dose). Writes the rates (through lab.reporting.report,
judge-corrected when `judge.calibration` names a labelled set), `report/dose.csv` with strengths in both units (raw
multiplier and ‖s·v‖/‖resid‖), `report/dose.png` (TPR, random-vector rate and coherence against strength per layer,
coherent band shaded) and `report/recommended.yaml` (a config snippet with the recommended band).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jobs.cli import Job, configure
from lab.experiments import dose
from lab.experiments.concept_injection import InjectionConfig, injection_of, judged_sweep, plan
from lab.experiments.dose import DoseSettings
from lab.reporting import report


@dataclass(frozen=True)
class DoseCalibrationConfig(InjectionConfig):
    """A concept-injection sweep over strengths plus the dose settings (configs/calibrate-dose-demo.yaml)."""

    dose: DoseSettings = field(default_factory=DoseSettings, metadata={"help": "how the coherent band is found"})
    output_dir: str = field(default="results/calibrate-dose", metadata={"help": "sweep Parquet dataset + report/"})

    def injection(self) -> InjectionConfig:
        return injection_of(self)


def main(argv: list[str] | None = None) -> int:
    """Run the dose sweep of --config; exit 0 on success, 2 on bad input."""
    with Job(__name__, argv) as job:
        cfg, args = configure(DoseCalibrationConfig, __doc__, argv, plan=lambda c: plan(c.injection()).trials)
        res, df, cal = judged_sweep(cfg.injection(), quiet=args.quiet)
        table = dose.curve(df)
        bands = dose.bands(table, cfg.dose)
        rep_dir = Path(cfg.output_dir) / "report"
        rep_dir.mkdir(parents=True, exist_ok=True)
        paths = [rep_dir / "dose.csv", rep_dir / "dose_bands.csv", rep_dir / "recommended.yaml", rep_dir / "dose.png"]
        table.to_csv(paths[0], index=False)
        bands.to_csv(paths[1], index=False)
        paths[2].write_text(dose.snippet(bands, res["plan"].mode, cfg.dose))
        dose.plot_calibration(
            table, bands, paths[3], title=f"{cfg.model.name}: dose calibration", mode=res["plan"].mode
        )
        extra = {
            f"L{r['layer']}/{k}": r[k]
            for _, r in bands.iterrows()
            for k in ("coherent_lo", "coherent_hi", "detection_onset")
        }
        report.report_config(
            df, cfg, "calibrate_dose", "dose calibration", artifacts=paths, calibration=cal, extra_metrics=extra
        )
        print(f"\n{'layer':>5} {'strength':>9} {'raw':>8} {'rel':>6}  {'tpr':<17} {'random':<17} coherence")
        for _, r in table.iterrows():
            print(
                f"{int(r['layer']):>5} {r['strength']:>9g} {r['strength_raw']:>8.3g} {r['strength_rel']:>6.3f}  "
                f"{report.ci(r, 'tpr'):<17} {report.ci(r, 'random_rate'):<17} {r['coherence']:.2f}"
            )
        print("\n" + paths[2].read_text())
        print(f"dose:    {paths[0].resolve()}  {paths[3].resolve()}  {paths[2].resolve()}")
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
