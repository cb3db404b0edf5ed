"""Probes beyond yes/no: `python -m jobs.probes --config configs/probes-demo.yaml`.

Localisation (which of N sentences carried the injected thought?) and strength discrimination (which of passages
A/B carried the stronger one?), scored from next-token logits of the answer labels after a prefilled answer prefix
(lab/experiments/probes.py) — deterministic, no judge. Each with the concept vector and with random / norm-matched vector controls
and a no-injection control. Prints accuracy with Wilson 95 % intervals against chance, writes
Parquet shards keyed by trial id (a rerun scores only what is missing), report CSVs + a plot, and one MLflow run.

Runs in-process through the experiment skeleton (lab/run/experiment.py; forward passes only, no generation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.cli import Job, configure
from lab.experiments.probes import ProbesConfig, settings


def main(argv: list[str] | None = None) -> int:
    """Run the probes of --config; exit 0 on success, 2 on bad input."""
    with Job(__name__, argv) as job:
        import time

        from lab.experiments import probes
        from lab.experiments.concept_injection import model_key, prepare
        from lab.run import store
        from lab.run.experiment import execute
        from lab.run.parallel import FanOutConfig

        cfg, args = configure(
            ProbesConfig, __doc__, argv, plan=lambda c: probes.expand_probes(settings(c), model_key(c.model))
        )
        st = settings(cfg)
        t0 = time.time()
        from lab.model.embedded import default_cache_dir

        cache = cfg.cache_dir or str(default_cache_dir() / "vectors")
        trials = probes.expand_probes(st, model_key(cfg.model))
        runner = FanOutConfig(num_actors=0, threads=cfg.threads, batch_size=cfg.batch_size, shard_size=256)
        out = execute(
            trials,
            cfg.output_dir,
            cfg.model,
            runner,
            probes.score_shard,
            prepare,
            (st.concepts, st.layers, cfg.template, cfg.baseline, cache, model_key(cfg.model), cfg.batch_size, (), None),
            progress=not args.quiet,
            desc="probe trials",
        )
        ids = {t.trial_id for t in trials}
        df = store.read(cfg.output_dir)
        df = df[df["trial_id"].isin(ids)]
        print(
            f"probe trials: {out.total} on {cfg.model.name} ({out.new} scored now, {out.skipped} already stored) "
            f"[{time.time() - t0:.0f} s]"
        )
        report_probes(cfg, df)
    return job.code


def report_probes(cfg: ProbesConfig, df: Any) -> Any:
    from lab.config import flatten, to_dict
    from lab.experiments import probes
    from lab.reporting import plots, report

    overall = probes.summarize_probes(df, ("probe", "kind"))
    by_setting = probes.summarize_probes(df, ("probe", "kind", "layer", "strength", "weak_fraction"))
    rep = Path(cfg.output_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    paths = [rep / "probes_overall.csv", rep / "probes_by_setting.csv", rep / "probes.png"]
    overall.to_csv(paths[0], index=False)
    by_setting.to_csv(paths[1], index=False)
    label = [
        f"{r.kind} {report.cell(r.layer, r.strength)}"
        + (f"_w{r.weak_fraction:g}" if r.probe == "discrimination" else "")
        for r in by_setting.itertuples()
    ]
    chance = {p: float(g["chance"].mean()) for p, g in df.groupby("probe")}
    plots.accuracy_intervals(
        by_setting.assign(label=label),
        "label",
        paths[2],
        chance=chance,
        group="probe",
        title=f"{cfg.model.name}: probe accuracy vs chance",
    )
    metrics = {
        f"{r['probe']}/{r['kind']}/{k}": r[k]
        for _, r in overall.iterrows()
        for k in ("accuracy", "accuracy_lo", "accuracy_hi", "n", "chance", "p_target", "top_answer_share")
    }
    metrics |= {f"{r.probe}/{lab}/accuracy": r.accuracy for r, lab in zip(by_setting.itertuples(), label)}
    run_id = report.log_run(
        cfg.tracking,
        flatten(to_dict(cfg)),
        metrics,
        paths,
        run_name=cfg.tracking.run_name or f"probes {cfg.model.name}",
        tags={"job": "probes", "model": cfg.model.name},
    )
    probes.print_summary(overall)
    print(f"report:  {paths[0].resolve()}  {paths[2].resolve()}")
    report.announce(run_id, cfg.tracking)
    return overall


if __name__ == "__main__":
    raise SystemExit(main())
