"""Concept-injection sweep (Lindsey 2025): `python -m jobs.concept_injection --config configs/demo.yaml`.

Runs the same locally and under `ray job submit`. Writes a Parquet dataset, a report (CSV + heatmap PNG) and one
MLflow run, and prints a summary table with the paths it wrote.
"""
from __future__ import annotations

import os
from pathlib import Path

from jobs.cli import entry, load_config, parser
from lab.sweep import InjectionConfig, run_sweep


@entry
def main(argv: list[str] | None = None) -> int:
    """Run the sweep described by --config; exit 0 on success, 2 on bad input."""
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(InjectionConfig, args)
    preflight(cfg)
    res = run_sweep(cfg, progress=not args.quiet)
    print(f"trials: {res['total']} ({res['new']} generated now, {res['skipped']} already stored) "
          f"judge: {res['judge']}")
    report_and_log(cfg, [t.trial_id for t in res["plan"].trials], title=f"{cfg.model.name}: concept injection")
    return 0


def preflight(cfg: InjectionConfig) -> None:
    """Fail in one line before any work: tracking URI and Ray address must be reachable."""
    from lab.parallel import check_address
    from lab.tracking import check_uri, resolve_uri

    if cfg.tracking.enabled:
        check_uri(resolve_uri(cfg.tracking))
    addr = cfg.runner.address or os.environ.get("RAY_ADDRESS")
    if addr:
        check_address(addr)


def report_and_log(cfg: InjectionConfig, trial_ids: list[str], title: str, parent_run_id: str | None = None,
                   tags: dict[str, str] | None = None) -> dict[str, float]:
    """Rates → CSV + heatmap in <output_dir>/report, an MLflow run, and a printed table. Returns overall rates."""
    from lab import metrics, plots, store, tracking
    from lab.config import flatten, to_dict

    df = store.read(cfg.output_dir)
    df = df[df["trial_id"].isin(set(trial_ids))]
    table = metrics.rates(df, by=("layer", "strength"))
    per_concept = metrics.rates(df, by=("concept",))
    overall = metrics.summarize(df)
    rep = Path(cfg.output_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    paths = [rep / "summary.csv", rep / "per_concept.csv", rep / "heatmap.png"]
    table.to_csv(paths[0], index=False)
    per_concept.to_csv(paths[1], index=False)
    plots.rate_heatmaps(table, paths[2], title=title)
    run_id = None
    if cfg.tracking.enabled:
        with tracking.run(cfg.tracking, flatten(to_dict(cfg)), tags=tags, parent_run_id=parent_run_id) as active:
            tracking.log_metrics(overall)
            for _, r in table.iterrows():
                cell = f"L{int(r['layer'])}_s{r['strength']:g}"
                tracking.log_metrics({f"{cell}/{k}": r[k] for k in ("tpr", "fpr", "introspection", "random_rate")
                                      if k in r})
            tracking.log_artifacts(*paths)
            run_id = active.info.run_id
    print_table(table, overall)
    print(f"results: {Path(cfg.output_dir).resolve()} (Parquet, {len(store.shard_files(cfg.output_dir))} shards)")
    print(f"report:  {paths[0].resolve()}  {paths[2].resolve()}")
    if run_id:
        print(f"mlflow:  run {run_id} in experiment '{cfg.tracking.experiment}' at {tracking.resolve_uri(cfg.tracking)}")
    return overall


def print_table(table, overall: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    def ci(r, k: str) -> str:  # type: ignore[no-untyped-def]
        return "   n/a           " if r[k] != r[k] else f"{r[k]:.2f} [{r[k + '_lo']:.2f},{r[k + '_hi']:.2f}]"

    cols = [c for c in ("tpr", "fpr", "introspection", "random_rate", "norm_matched_rate", "shuffled_rate",
                        "forced_id") if c in table and table[c].notna().any()]
    print("layer strength  " + "  ".join(f"{c:<17}" for c in cols) + "  n_inj")
    for _, r in table.iterrows():
        print(f"{int(r['layer']):>5} {r['strength']:>8g}  " + "  ".join(f"{ci(r, c):<17}" for c in cols)
              + f"  {int(r['n_tpr'])}")
    print("overall         " + "  ".join(f"{ci(overall, c):<17}" for c in cols if c in overall)
          + f"  {int(overall['n_tpr'])}")
    if overall["n_unparsed"]:
        print(f"unparseable verdicts: {overall['n_unparsed']} (left out of every rate)")
    for line in interpret(overall):
        print(line)


def interpret(o: dict[str, float]) -> list[str]:
    """Plain-language reading of the overall rates, from their intervals (no verdict beyond what they support)."""
    out = []
    for ctl in ("random", "norm_matched", "shuffled"):
        k = f"{ctl}_rate"
        if o.get(f"n_{k}"):
            if o["tpr_lo"] > o[f"{k}_hi"]:
                out.append(f"reading: TPR is above the {ctl}-vector control (intervals apart): detection is "
                           "concept-specific here")
            else:
                out.append(f"reading: TPR {o['tpr']:.2f} is not above the {ctl}-vector control "
                           f"{o[k]:.2f} (intervals overlap): no evidence that detection is concept-specific "
                           "rather than a yes-bias under any perturbation")
    if o.get("n_introspection") and o["introspection"] == 0:
        out.append(f"reading: no injected concept was named with a detection claim (0/{o['n_introspection']}, "
                   f"95% CI up to {o['introspection_hi']:.2f})")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
