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
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from jobs.cli import entry, load_config, parser
from lab.errors import LabError
from lab.sweep import InjectionConfig


@dataclass(frozen=True)
class BidirectionalConfig(InjectionConfig):
    output_dir: str = "results/bidirectional"
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


@entry
def main(argv: list[str] | None = None) -> int:
    """Inject A − B and B − A for matched pairs; exit 2 on bad input."""
    import numpy as np
    import pandas as pd
    import torch
    from safetensors.torch import load_file

    from analysis import geometry as geo, pairs as pr
    from lab import plots, store, tracking
    from lab.concepts import ConceptVector
    from lab.sweep import model_key, run_sweep
    from lab.trials import make_trial

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_config(BidirectionalConfig, args)
    if not cfg.geometry:
        raise LabError("set `geometry` to a geometry job's output_dir or MLflow run id")
    src = (
        Path(cfg.geometry)
        if Path(cfg.geometry).exists()
        else tracking.resolve_source(cfg.geometry, cfg.tracking.uri).directory
    )
    adir = src / "analysis" if (src / "analysis" / geo.VECTORS).is_file() else src
    if not (adir / geo.RESULT).is_file():
        raise LabError(f"no geometry outputs in {src} (expected {geo.RESULT} and {geo.VECTORS})")
    if cfg.tracking.enabled:
        tracking.check_uri(tracking.resolve_uri(cfg.tracking))
    info = json.loads((adir / geo.RESULT).read_text())
    extra, tau = info["extra"], float(info["tau"])
    layer, mode, resid = int(extra["layer"]), extra["strength_mode"], float(extra["resid_norm"])
    strength = cfg.strength if cfg.strength is not None else float(extra["strength"])
    vecs = load_file(str(adir / geo.VECTORS))
    rates = pd.read_csv(adir / geo.RATES)
    rates = rates[rates.concept.isin(vecs)]
    concepts, y = list(rates.concept), rates["rate"].to_numpy(float)
    X = torch.stack([vecs[c] for c in concepts]).double().numpy()
    proj = dict(zip(concepts, (X @ geo.ridge_direction(X, y)).tolist()))
    rate = dict(zip(concepts, y.tolist()))
    sd = float(np.std(list(proj.values()))) or 1.0
    thr = math.inf if cfg.threshold is None else cfg.threshold * sd
    groups = {"S-S": [c for c in concepts if rate[c] > tau], "F-F": [c for c in concepts if rate[c] <= tau]}
    matched = {
        g: pr.match_pairs(cs, proj, rate, thr, cfg.bucket * sd if cfg.bucket else None, max_pairs=cfg.max_pairs)
        for g, cs in groups.items()
    }
    print(
        f"τ = {tau:.3f}; pairs: "
        + ", ".join(f"{g} {len(p)} (of {len(groups[g])} concepts)" for g, p in matched.items())
    )
    all_pairs = [(g, a, b) for g, ps in matched.items() for a, b in ps]
    if not all_pairs:
        raise LabError("no pairs could be matched (too few concepts per group)")

    # A − B is the bank vector "A-B", judged for A; ‖A − B‖ = ‖B − A‖, so both signs get the same raw multiplier
    diffs = {
        (f"{x}-{z}", layer): ConceptVector(x, layer, (vecs[x] - vecs[z]).float(), resid)
        for _, a, b in all_pairs
        for x, z in ((a, b), (b, a))
    }
    sw = cfg.sweep
    gen = {k: getattr(sw, k) for k in ("prompt_variant", "dialogue_format", "seed", "max_new_tokens", "temperature")}
    trials = [
        make_trial(
            model=model_key(cfg.model),
            concept=cv.concept,
            layer=layer,
            strength=strength,
            strength_mode=mode,
            kind="injection",
            trial_number=n,
            sample=s,
            forced=False,
            **gen,
            vector=name,
        )
        for (name, _), cv in diffs.items()
        for n in range(1, sw.trials_per_concept + 1)
        for s in range(sw.samples)
    ]
    out = Path(cfg.output_dir)
    run_sweep(
        dataclasses.replace(cfg, output_dir=str(out / "trials")),
        progress=not args.quiet,
        trials=trials,
        extra_vectors=diffs,
    )
    df = store.read(out / "trials")
    df = df[df.trial_id.isin({t.trial_id for t in trials})]
    det = df.assign(detected=df.detected.astype(float)).groupby("vector")["detected"].mean()
    per_pair = pd.DataFrame(
        [
            {
                "group": g,
                "a": a,
                "b": b,
                "rate_a": rate[a],
                "rate_b": rate[b],
                "proj_diff": abs(proj[a] - proj[b]),
                "rate_ab": float(det[f"{a}-{b}"]),
                "rate_ba": float(det[f"{b}-{a}"]),
                "vector_ab": f"{a}-{b}",
                "vector_ba": f"{b}-{a}",
            }
            for g, a, b in all_pairs
        ]
    )
    summary = pr.summarize(per_pair, tau)
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    per_pair.to_csv(rep / "pairs.csv", index=False)
    summary.to_csv(rep / "summary.csv", index=False)
    for _, r in summary.iterrows():
        print(
            f"{r['group']}: {int(r['pairs'])} pairs; A−B works {r['a_minus_b']:.3f}, B−A {r['b_minus_a']:.3f}, "
            f"both ways {r['both']:.3f} [{r['both_lo']:.2f},{r['both_hi']:.2f}], either {r['either']:.3f}"
        )
    fig, ax = plots.plt.subplots(figsize=(5.5, 3.4))
    xs = np.arange(len(summary))
    for j, m in enumerate(("a_minus_b", "b_minus_a", "both")):
        v = summary[m].to_numpy()
        err = np.vstack([v - summary[f"{m}_lo"].to_numpy(), summary[f"{m}_hi"].to_numpy() - v])
        ax.bar(xs + (j - 1) * 0.27, v, 0.27, yerr=err, capsize=3, label=m.replace("_", " "))
    ax.set_xticks(xs, [f"{g} (n={int(n)})" for g, n in zip(summary.group, summary.pairs)])
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of pairs with rate > τ={tau:.2f}")
    ax.legend(fontsize=8)
    plot = plots.save(fig, rep / "bidirectional.png", f"{extra.get('model', cfg.model.name)} L{layer}: A−B vs B−A")
    if cfg.tracking.enabled:
        with tracking.run(
            cfg.tracking,
            {
                "geometry": str(adir),
                "layer": layer,
                "strength": strength,
                "tau": tau,
                "threshold": cfg.threshold,
                "bucket": cfg.bucket,
                "model": cfg.model.name,
                "output_dir": str(out.resolve()),
            },
            tags={"job": "bidirectional", "results_dir": str(out.resolve())},
            run_name="bidirectional",
        ) as run:
            tracking.log_metrics(
                {
                    f"{r['group']}/{k}": r[k]
                    for _, r in summary.iterrows()
                    for k in ("pairs", "a_minus_b", "b_minus_a", "both", "either", "both_lo", "both_hi")
                }
            )
            tracking.log_artifacts(rep / "pairs.csv", rep / "summary.csv", plot)
        print(f"mlflow: run {run.info.run_id} in experiment '{cfg.tracking.experiment}'")
    print(f"report: {rep.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
