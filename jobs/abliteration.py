"""Refusal abliteration vs introspection: `python -m jobs.abliteration --config configs/abliteration-demo.yaml`.

1. Refusal directions per layer from the shipped harmful/harmless instructions (held-out harmful lines excluded),
   saved as <output_dir>/refusal_directions.safetensors.
2. Concept injection on the original model (<output_dir>/original) and the abliterated one (<output_dir>/abliterated):
   same concepts, layers, strengths and seeds. `refusal.method: weights` orthogonalises the residual writers and saves
   the checkpoint (<output_dir>/model, loaded back from disk for the sweep); `interventions` ablates with hooks
   (`run_sweep(edits=…)`, on Ray actors too). Each arm's concept vectors come from its own model (with
   `interventions`, from the unedited one: run_sweep computes vectors before applying edits).
3. A refusal check before/after: greedy short replies to the held-out harmful instructions, scored by a refusal-phrase
   matcher (a simple check, not a judge). ΔTPR, ΔFPR, Δintrospection, Δrefusal with Newcombe 95 % intervals; a
   before/after bar plot; MLflow: one parent run and a child per arm.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from analysis.abliteration import RefusalConfig
from jobs.cli import entry, load_config, parser
from lab.experiments.concept_injection import InjectionConfig
from lab.run.experiment import preflight


@dataclass(frozen=True)
class AbliterationConfig(InjectionConfig):
    output_dir: str = field(default="results/abliteration", metadata={"help": "arm sweeps, model/ (weights), report/"})
    refusal: RefusalConfig = field(default_factory=RefusalConfig, metadata={"help": "directions, ablation, check"})


@entry
def main(argv: list[str] | None = None) -> int:
    """Abliterate, then compare concept injection and refusal before/after; exit 2 on bad input."""
    import pandas as pd
    import torch

    from analysis import abliteration as ab, compare, directions as dr
    from lab.config import flatten, to_dict
    from lab.model.loading import load, threads
    from lab.reporting import metrics, report
    from lab.run import store, tracking
    from lab.steer import interventions as iv

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(AbliterationConfig, args)
    if cfg.sweep.strength_mode == "default":  # the saved checkpoint has no registry entry: pin the model's mode
        from lab.experiments.concept_injection import plan

        cfg = dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, strength_mode=plan(cfg).mode))
    rc, out = cfg.refusal, Path(cfg.output_dir)
    preflight(cfg.tracking, output_dir=out)
    harmful, held = dr.split_heldout(dr.instructions(rc.harmful, rc.extra_harmful), rc.heldout)
    harmless = dr.instructions(rc.harmless, rc.extra_harmless)
    threads(cfg.runner.threads)
    lm = load(cfg.model)
    rd = (
        dr.RefusalDirections.load(rc.directions)
        if rc.directions
        else dr.refusal_direction(lm, harmful, harmless, rc.position)
    )
    rd.save(out / "refusal_directions.safetensors")
    n = lm.n_layers
    dirs = rd.directions if rc.direction_layer is None else rd.layer(lm.check_layer(rc.direction_layer))
    weights = torch.tensor(rc.weights) if rc.weights else 1.0
    print(
        f"refusal directions: {n} layers from {rd.n_harmful} harmful / {rd.n_harmless} harmless, position "
        f"{rd.position}; ‖mean diff‖ by layer: " + " ".join(f"{x:.1f}" for x in rd.raw_norms)
    )

    arms: dict[str, dict] = {}
    cfgs: dict[str, AbliterationConfig] = {}

    def arm(name: str, model_lm, model_cfg, edits=(), tag="") -> None:  # type: ignore[no-untyped-def]
        from lab.experiments.concept_injection import run_sweep

        with iv.apply(model_lm.model, list(edits)):
            replies = ab.greedy_replies(model_lm, held, rc.check_tokens)
        acfg = dataclasses.replace(cfg, model=model_cfg, output_dir=str(out / name))
        replica = model_lm if cfg.runner.num_actors == 0 else None  # the edits apply on every replica, Ray actors too
        res = run_sweep(acfg, progress=not args.quiet, lm=replica, edits=edits, edits_tag=tag)
        refused = [ab.is_refusal(t) for t in replies]
        (out / "report").mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"arm": name, "instruction": held, "reply": replies, "refused": refused}).to_parquet(
            out / "report" / f"refusal_check_{name}.parquet", index=False
        )
        df = store.read(acfg.output_dir)
        df = df[df["trial_id"].isin({t.trial_id for t in res["plan"].trials})]
        arms[name] = metrics.summarize(df) | compare.rate_entry(sum(refused), len(refused), "refusal_rate")
        cfgs[name] = acfg
        print(f"{name}: {res['total']} trials ({res['new']} new); refusal check {sum(refused)}/{len(refused)}")

    arm("original", lm, cfg.model)
    if rc.method == "weights":
        ab.orthogonalize(lm.model, dirs, weights)
        mdir = ab.save_model(
            lm,
            out / "model",
            {
                "source": cfg.model.name,
                "position": rc.position,
                "direction_layer": rc.direction_layer,
                "weights": list(rc.weights),
            },
        )
        del lm
        mcfg = dataclasses.replace(cfg.model, name=str(mdir.resolve()))
        arm("abliterated", load(mcfg), mcfg)
    else:
        edits = ab.ablation_edits(dirs, n, weights, rc.sites)  # tagged by the directions, weights and sites
        fp = hashlib.sha256(dirs.detach().float().cpu().numpy().tobytes() + f"{list(rc.weights)}|{rc.sites}".encode())
        arm("abliterated", lm, cfg.model, edits, f"ablate-{rc.sites}@{fp.hexdigest()[:12]}")

    table = compare.compare(arms["original"], arms["abliterated"])
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
