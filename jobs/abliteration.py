"""Refusal abliteration vs introspection: `python -m jobs.abliteration --config configs/abliteration-demo.yaml`.

1. Refusal directions per layer from the shipped harmful/harmless instructions (held-out harmful lines excluded), or
   from the paper's lists (`refusal.prompts_from`, 512 + 512 sampled with seed 42), saved as
   <output_dir>/refusal_directions.safetensors.
2. Concept injection on the original model (<output_dir>/original) and the abliterated one (<output_dir>/abliterated):
   same concepts, layers, strengths and seeds. `refusal.method: weights` orthogonalises the residual writers and saves
   the checkpoint (<output_dir>/model, loaded back from disk for the sweep); `interventions` ablates with hooks
   (`run_sweep(edits=…)`, on Ray actors too). Each arm's concept vectors come from its own model (with
   `interventions`, from the unedited one: run_sweep computes vectors before applying edits).
3. A refusal check before/after: greedy short replies to the held-out harmful instructions, scored by a refusal-phrase
   matcher (a simple check, not a judge). ΔTPR, ΔFPR, Δintrospection, Δrefusal with Newcombe 95 % intervals; a
   before/after bar plot; MLflow: one parent run and a child per arm.
The model-side steps (directions, refusal checks, orthogonalised checkpoint: lab.experiments.refusal.prepare_arms) run
with `runner.num_actors: 0` in this process on the model the sweeps share, else on one Ray actor
(lab.run.experiment.on_replica): then the driver loads no model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from jobs.cli import Job, configure
from lab.experiments.concept_injection import InjectionConfig, plan
from lab.experiments.refusal import RefusalConfig


@dataclass(frozen=True)
class AbliterationConfig(InjectionConfig):
    output_dir: str = field(default="results/abliteration", metadata={"help": "arm sweeps, model/ (weights), report/"})
    refusal: RefusalConfig = field(default_factory=RefusalConfig, metadata={"help": "directions, ablation, check"})


def _planned(cfg: AbliterationConfig) -> tuple[int, str]:
    return 2 * len(plan(cfg).trials), "trials (the same sweep on the original and on the abliterated model)"


def main(argv: list[str] | None = None) -> int:
    """Abliterate, then compare concept injection and refusal before/after; exit 2 on bad input."""
    with Job(__name__, argv) as job:
        import pandas as pd

        from analysis import compare
        from lab.config import flatten, to_dict
        from lab.experiments import refusal
        from lab.model.loading import load, threads
        from lab.reporting import metrics, report
        from lab.run import store, tracking
        from lab.run.experiment import on_replica

        cfg, args = configure(AbliterationConfig, __doc__, argv, plan=_planned)
        if cfg.sweep.strength_mode == "default":  # the saved checkpoint has no registry entry: pin the model's mode
            cfg = dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, strength_mode=plan(cfg).mode))
        rc, out = cfg.refusal, Path(cfg.output_dir)
        harmful, harmless, held = refusal.direction_prompts(rc)  # the shipped lists, or the paper's (prompts_from)
        given = refusal.RefusalDirections.load(rc.directions) if rc.directions else None
        threads(cfg.runner.threads)
        local = cfg.runner.num_actors == 0
        lm = load(cfg.model) if local else None  # in process: one model for the checks and the original arm's sweep
        mdir = (out / "model").resolve()
        # on an actor every model-side step runs at once; in process the original arm's sweep comes before
        # abliterating. `weights` orthogonalises and saves whole weights: that replica is never ZeRO-3 sharded
        whole = dataclasses.replace(cfg.model, shard="none", workers_per_replica=1, offload=False)
        step = (rc, harmful, harmless, held, given, mdir, not local)
        prep = on_replica(
            whole if rc.method == "weights" else cfg.model, cfg.runner, refusal.prepare_arms, *step, lm=lm
        )
        rd = prep.directions
        rd.save(out / "refusal_directions.safetensors")
        print(
            f"refusal directions: {prep.n_layers} layers from {rd.n_harmful} harmful / {rd.n_harmless} harmless, "
            f"position {rd.position}; ‖mean diff‖ by layer: " + " ".join(f"{x:.1f}" for x in rd.raw_norms)
        )

        arms: dict[str, dict] = {}
        cfgs: dict[str, AbliterationConfig] = {}

        def arm(name: str, replies: list[str], model_lm, model_cfg, edits=(), tag=""):  # type: ignore[no-untyped-def]
            from lab.experiments.concept_injection import run_sweep

            acfg = dataclasses.replace(cfg, model=model_cfg, output_dir=str(out / name))
            # model_lm None: on Ray actors, the edits applied on every replica
            res = run_sweep(acfg, progress=not args.quiet, lm=model_lm, edits=edits, edits_tag=tag)
            refused = [refusal.is_refusal(t) for t in replies]
            (out / "report").mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"arm": name, "instruction": held, "reply": replies, "refused": refused}).to_parquet(
                out / "report" / f"refusal_check_{name}.parquet", index=False
            )
            df = store.read(acfg.output_dir)
            df = df[df["trial_id"].isin({t.trial_id for t in res["plan"].trials})]
            arms[name] = metrics.summarize(df) | compare.rate_entry(sum(refused), len(refused), "refusal_rate")
            cfgs[name] = acfg
            print(f"{name}: {res['total']} trials ({res['new']} new); refusal check {sum(refused)}/{len(refused)}")

        arm("original", prep.replies["original"], lm, cfg.model)
        if lm is not None:
            prep = refusal.abliterate(lm, rc, prep, held, mdir)
        if rc.method == "weights":
            del lm
            mcfg = dataclasses.replace(cfg.model, name=str(Path(prep.model_dir).resolve()))
            arm("abliterated", prep.replies["abliterated"], load(mcfg) if local else None, mcfg)
        else:
            arm("abliterated", prep.replies["abliterated"], lm, cfg.model, *refusal.arm_edits(rc, prep))

        table = compare.compare_rates(arms["original"], arms["abliterated"])
        rep = out / "report"
        rep.mkdir(parents=True, exist_ok=True)
        table.to_csv(rep / "compare.csv", index=False)
        plot = compare.plot_compare(
            table,
            rep / "before_after.png",
            ("original", "abliterated"),
            f"{cfg.model.name}: refusal abliteration ({rc.method})",
        )
        compare.print_compare(table, ("original", "abliterated"))
        for line in compare.readings(table, arms["original"]):
            print(line)
        deltas = {f"delta_{r['metric']}{s}": r[f"delta{s}"] for _, r in table.iterrows() for s in ("", "_lo", "_hi")}
        with report.parent_run(cfg.tracking, flatten(to_dict(cfg)), {"job": "abliteration"}, "abliteration") as parent:
            if parent:
                tracking.log_metrics(deltas)
                tracking.log_artifacts(rep / "compare.csv", plot, out / "refusal_directions.safetensors")
            for name, summ in arms.items():
                tags = {"job": "abliteration", "arm": name}
                report.log_run(
                    cfg.tracking, flatten(to_dict(cfgs[name])), summ, tags=tags, run_name=name, parent_run_id=parent
                )
        report.announce(parent, cfg.tracking)
        print(f"report: {(rep / 'compare.csv').resolve()}  {plot.resolve()}")
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
