"""Dose response of transcoder features: `python -m jobs.dose_response --config configs/dose-response-demo.yaml`.

Per concept, the injection-trial prompt (trial numbers 1..k) with the concept vector added at `dose.inject_layer`
at each signed strength (0 = unsteered); at the last token, the transcoder features of every `dose.layers` layer
(all after the injection layer) and the Yes − No score. Stored sparse (only non-zero activations) as
<output_dir>/features/*.parquet (concept, strength, trial_number, layer, feature, activation) and rows/*.parquet
(one row per forward pass), resumable per concept (lab/experiments/dose_response.py, through the experiment
skeleton: in this process or, with `runner.num_actors` > 0, on Ray actors; forward passes only, no judge). Then the
gate / evidence-carrier / pathway report (`analysis.gates_report`, rerunnable without the model) and one MLflow run
with its plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.cli import Job, configure
from lab.experiments.dose_response import FeatureJobConfig
from lab.run.tracking import TrackingConfig


@dataclass(frozen=True)
class DoseResponseConfig(FeatureJobConfig):
    detection_from: str | None = field(
        default=None,
        metadata={
            "help": "concept-injection results dir: judged per-concept TPR for the carrier criterion (default: logits)"
        },
    )
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="dose-response"), metadata={"help": "MLflow; one run"}
    )
    output_dir: str = field(default="results/dose-response", metadata={"help": "features/, rows/ (Parquet), report/"})


def print_dose_report(res: dict, label: str) -> None:
    s = res["summary"]
    print(
        f"{label}: {s['n_features_seen']} features seen, {s['n_gates']} gate candidates, "
        f"{s['n_inverted_v']} with an inverted V (suppressed by both signs), {s['n_carriers']} evidence carriers "
        f"({s['n_generic_carriers']} generic)"
    )
    cols = ["rank", "layer", "feature", "dla", "a0", "a_pos", "a_neg", "inv_v_rel", "rho_pos", "rho_neg"]
    print(res["gates"][cols].head(8).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    if len(res["carrier_counts"]):
        print(res["carrier_counts"].to_string(index=False))
    print(res["pathway"].to_string(index=False, float_format=lambda x: f"{x:.3g}"))


def main(argv: list[str] | None = None) -> int:
    """Run the dose response of --config; exit 0 on success, 2 on bad input."""
    with Job(__name__, argv) as job:
        import time
        from functools import partial

        from analysis.gates_report import detection_from, gate_report
        from lab.config import flatten, to_dict
        from lab.experiments import dose_response
        from lab.experiments.dose_response import dose_trials
        from lab.model import loading
        from lab.reporting import report
        from training.transcoder.train import from_source

        rerun = "python -m analysis.gates_report --run {output}"
        cfg, args = configure(DoseResponseConfig, __doc__, argv, plan=lambda c: dose_trials(c, c.model), rerun=rerun)
        t0 = time.time()
        loading.threads(cfg.threads)
        d = cfg.dose
        dictionaries = partial(from_source, src=cfg.transcoders)
        done = dose_response.run_dose_response(cfg, cfg.model, cfg.output_dir, dictionaries, progress=not args.quiet)
        t_setup = time.time() - t0 - done.work_s  # model, vectors, transcoders (none when every concept was stored)
        res = gate_report(cfg.output_dir, cfg.gates_k, detection=detection_from(cfg.output_dir, cfg.detection_from))
        print(
            f"dose response: {done.total} concepts × {len(d.strengths)} strengths × {len(d.trial_numbers)} trials "
            f"on {cfg.model.name} [setup {t_setup:.0f} s, total {time.time() - t0:.0f} s]"
        )
        print_dose_report(res, cfg.model.name)
        run_id = report.log_run(
            cfg.tracking,
            flatten(to_dict(cfg)),
            res["summary"],
            res["paths"],
            tags={"job": "dose_response", "model": cfg.model.name},
            run_name=cfg.tracking.run_name or f"dose response {cfg.model.name}",
        )
        report.announce(run_id, cfg.tracking)
        print(f"tables:  {cfg.output_dir}/features, {cfg.output_dir}/rows; report: {cfg.output_dir}/report")
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
