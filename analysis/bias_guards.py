"""Guards of a trained-bias evaluation on held-out concepts: is the gain concept-specific, or does the bias teach
the model to report any perturbation?

Every evaluation holds held-out concept injections, random-direction injections (`random`: the typical concept-vector
norm; `norm_matched`: this concept vector's norm) and no-injection controls. From the stored responses:
identification of the own concept vs naming *another* held-out concept (the chance level), and a verdict per arm
against the unbiased baseline whose sentences state what the 95 % intervals support. A bias that makes random vectors
"detected" more without held-out TPR rising above them is flagged a PERTURBATION DETECTOR.

Rerun from stored generations: `python -m analysis.bias_guards --run <steering-vector job output_dir>`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.reporting.report import ci

_METRICS = ("tpr", "fpr", "introspection", "random_rate", "norm_matched_rate", "own_id", "other_id", "random_id")
FLAGS = ("tpr_gain", "fpr_rise", "concept_specific", "vector_rate_rise", "id_above_chance", "perturbation_detector")


def mentions(text: str, word: str) -> bool:
    """Whole-word, case-insensitive (plural s/es allowed)."""
    return re.search(rf"\b{re.escape(word.lower())}(?:s|es)?\b", str(text).lower()) is not None


def identification_vs_chance(df: Any, concepts: Sequence[str]) -> dict[str, float]:
    """From stored responses: how often an injected trial's answer names its own concept (`own_id`), another of
    `concepts` (`other_id`), and the chance level of naming one specific concept — the mean fraction of the other
    concepts named (`chance_id`); plus how often a random-vector trial names its paired concept (`random_id`)."""
    from lab.reporting.metrics import wilson

    out: dict[str, float] = {}
    inj = df[(df.kind == "injection") & ~df.forced.astype(bool)]
    rnd = df[df.kind.isin(["random", "norm_matched"]) & ~df.forced.astype(bool)]
    names = list(dict.fromkeys(concepts))
    own = [mentions(r, c) for r, c in zip(inj.response, inj.concept)]
    others = [[w for w in names if w != c and mentions(r, w)] for r, c in zip(inj.response, inj.concept)]
    for key, hits, n in (
        ("own_id", sum(own), len(own)),
        ("other_id", sum(bool(o) for o in others), len(others)),
        ("random_id", sum(mentions(r, c) for r, c in zip(rnd.response, rnd.concept)), len(rnd)),
    ):
        p, lo, hi = wilson(int(hits), int(n))
        out |= {key: p, f"{key}_lo": lo, f"{key}_hi": hi, f"n_{key}": n}
    k = max(len(names) - 1, 1)
    out["chance_id"] = (sum(len(o) for o in others) / k / len(others)) if others else math.nan
    return out


def verdict(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the intervals support, as flags and one sentence each. Rates come from `lab.reporting.metrics.summarize` (with
    `identification_vs_chance` merged in); 'apart' means the 95 % intervals do not overlap."""

    def g(d: dict[str, float], k: str) -> float:
        v = d.get(k, math.nan)
        return math.nan if v is None else float(v)

    def above(a: dict[str, float], ka: str, b: dict[str, float], kb: str) -> bool:
        return g(a, f"{ka}_lo") > g(b, f"{kb}_hi")

    vec = [k for k in ("random_rate", "norm_matched_rate") if not math.isnan(g(after, k))]
    flags = {
        "tpr_gain": above(after, "tpr", before, "tpr"),
        "fpr_rise": above(after, "fpr", before, "fpr"),
        "concept_specific": bool(vec) and all(above(after, "tpr", after, k) for k in vec),
        "vector_rate_rise": any(above(after, k, before, k) for k in vec),
        "id_above_chance": g(after, "own_id_lo") > max(g(after, "chance_id"), g(after, "random_id_hi")),
    }
    flags["perturbation_detector"] = flags["vector_rate_rise"] and not flags["concept_specific"]
    lines = [
        f"TPR {ci(before, 'tpr')} → {ci(after, 'tpr', True)}: "
        + ("a gain (intervals apart)" if flags["tpr_gain"] else "no gain the intervals support"),
        f"FPR {ci(before, 'fpr')} → {ci(after, 'fpr', True)}"
        + (": RISES (intervals apart)" if flags["fpr_rise"] else ""),
    ]
    for k in vec:
        lines.append(f"{k} {ci(before, k)} → {ci(after, k, True)}")
    if flags["perturbation_detector"]:
        lines.append(
            "PERTURBATION DETECTOR: random same-norm vectors are 'detected' more after training and not "
            "less than concepts — the bias reports any perturbation, not the concept"
        )
    elif flags["concept_specific"]:
        lines.append("concept-specific: held-out TPR lies above every random-vector rate (intervals apart)")
    else:
        lines.append("not shown concept-specific: held-out TPR is not above the random-vector rate (intervals overlap)")
    lines.append(
        f"identification: own concept {ci(after, 'own_id', True)} vs another held-out concept "
        f"{ci(after, 'other_id', True)}, chance per concept {g(after, 'chance_id'):.3f}, paired concept on "
        f"random vectors {ci(after, 'random_id', True)} → "
        + ("above chance" if flags["id_above_chance"] else "NOT above chance")
    )
    return flags | {"lines": lines}


def arm_rates(df: Any, heldout: Sequence[str]) -> dict[str, float]:
    """`lab.reporting.metrics.summarize` + `identification_vs_chance` for one arm's stored trials."""
    from lab.reporting.metrics import summarize

    return summarize(df) | identification_vs_chance(df, heldout)


def comparison(rates: dict[str, dict[str, float]], arms_meta: dict[str, dict[str, Any]]) -> Any:
    """One row per arm: its metadata (layer, seed), rates with intervals, and the verdict flags against `baseline`."""
    import pandas as pd

    base = rates.get("baseline", {})
    rows = []
    for arm in sorted(rates, key=lambda a: a != "baseline"):  # baseline ("before") first, then arms in order
        r = rates[arm]
        v = verdict(base, r) if arm != "baseline" else {}
        row = {"arm": arm} | arms_meta.get(arm, {})
        for m in _METRICS:
            row |= {k: r.get(k, math.nan) for k in (m, f"{m}_lo", f"{m}_hi", f"n_{m}")}
        row["chance_id"] = r.get("chance_id", math.nan)
        row |= {f: v.get(f, math.nan) for f in FLAGS}
        rows.append(row)
    return pd.DataFrame(rows)


def load_rates(root: str | Path, evaluation: str = "eval") -> tuple[dict[str, dict[str, float]], list[str]]:
    """Per-arm rates recomputed from the Parquet trials a job stored under <root>/arms/<arm>/<evaluation>/trials
    (`eval`: the standard dialogue; `eval_paper`: the paper code's variant)."""
    from lab.run import store

    root = Path(root)
    heldout = json.loads((root / "split.json").read_text())["heldout_evaluated"]
    arms = sorted(p.name for p in (root / "arms").iterdir() if (p / evaluation / "trials").is_dir())
    return {a: arm_rates(store.read(root / "arms" / a / evaluation / "trials"), heldout) for a in arms}, heldout


def main(run_dir: str | Path, evaluation: str = "eval") -> None:
    """Print each arm's verdict against the baseline from a steering-vector run's stored generations."""
    rates, _ = load_rates(run_dir, evaluation)
    for arm in rates:
        if arm != "baseline":
            print(f"== {arm}")
            for line in verdict(rates.get("baseline", {}), rates[arm])["lines"]:
                print("  " + line)


if __name__ == "__main__":
    from lab.errors import ArgumentParser, input_folder, one_line_errors

    with one_line_errors():
        ap = ArgumentParser(prog="python -m analysis.bias_guards", description="re-analyse a steering-vector run")
        ap.add_argument("--run", required=True, help="the job's output_dir (holds split.json and arms/<arm>/eval)")
        ap.add_argument("--evaluation", default="eval", choices=("eval", "eval_paper"), help="standard or paper")
        args = ap.parse_args()
        run = input_folder(args.run, "split.json", f"arms/*/{args.evaluation}/trials", made_by="jobs.steering_vector")
        main(run, args.evaluation)
