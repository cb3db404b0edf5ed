"""Regenerate the README's demo table and results paragraph from stored runs, so every figure there comes from a run
of the code (`python bench/readme_tables.py --write`; `--check` exits 1 when the README is out of date).

Why here: bench/ is where the README's measured figures are made (`make bench`), outside the package rooms, so this
script may read both the stored tables (Parquet, the analyses' JSON through `analysis/`) and MLflow (each run's
`wall_s`, its git commit) — which `analysis/` must not, and `lab/` may not import `analysis/`. It runs no model: it
reads what the demo jobs stored (`<output_dir>` of each configs/*-demo.yaml, the MLflow DB they logged to).

Per demo config, a row is regenerated only when its stored run is there: the wall time is the run's `wall_s`
(the job's time to its report), "what it printed" is recomputed from the stored outputs, and the commit is the run's
`provenance.git_commit`. A row without a stored run is left as it is, marked with the date it was measured, so the
README never shows a figure as current that no stored run backs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.errors import ArgumentParser, one_line_errors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- readme_tables:demos -->", "<!-- /readme_tables:demos -->"
RESULTS_BEGIN, RESULTS_END = "<!-- readme_tables:results -->", "<!-- /readme_tables:results -->"
HEADER = "| demo config | wall time | what it printed | run |\n| --- | --- | --- | --- |"
STALE = "measured 2026-12-01 on an older commit; not rerun since"


def _yaml(config: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "configs" / config).read_text())


def _f(x: float) -> str:
    return f"{x:.2f}".replace("-", "−")


def _ci(o: dict[str, Any], k: str) -> str:
    return f"{_f(o[k])} [{_f(o[k + '_lo'])}, {_f(o[k + '_hi'])}]"


def rates_summary(out: Path) -> str | None:
    """The sweep's overall rates with intervals and their n (distinct generations), from its Parquet dataset."""
    from lab.reporting import metrics
    from lab.run import store

    if not store.shard_files(out):
        return None
    o = metrics.summarize(store.read(out))
    parts = [f"TPR {_ci(o, 'tpr')} n={o['n_tpr']}", f"FPR {_ci(o, 'fpr')} n={o['n_fpr']}"]
    if o.get("n_random_rate"):
        parts.append(f"random-vector {_ci(o, 'random_rate')}")
    parts.append(f"introspection {_ci(o, 'introspection')}")
    return ", ".join(parts)


def geometry_summary(out: Path) -> str | None:
    """PC1·mean-diff, PC1·refusal and the ridge's nested-CV R², from the stored analysis/geometry.json."""
    f = out / "analysis" / "geometry.json"
    if not f.is_file():
        return None
    g = json.loads(f.read_text())
    return (
        f"PC1·mean-diff {_f(g['pc1_meandiff_cos'])}, PC1·refusal {_f(g['pc1_refusal_cos'])}; ridge nested-CV R² "
        f"{_f(g['ridge_r2'])}"
    )


# the demo configs whose printed figure this script can recompute from stored outputs
SUMMARIES: dict[str, Callable[[Path], str | None]] = {
    "demo.yaml": rates_summary,
    "demo-greedy.yaml": rates_summary,
    "geometry-demo.yaml": geometry_summary,
}


def stored_run(db: Path, config: str, out: Path) -> dict[str, Any] | None:
    """The latest finished top-level MLflow run of the config's experiment that wrote `out`: wall_s and commit."""
    import mlflow

    if not db.is_file():
        return None
    client = mlflow.MlflowClient(f"sqlite:///{db.resolve()}")
    exp = client.get_experiment_by_name((_yaml(config).get("tracking") or {}).get("experiment", ""))
    if exp is None:
        return None
    for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"]):
        where = r.data.params.get("output_dir") or r.data.tags.get("results_dir")
        top = "mlflow.parentRunId" not in r.data.tags
        if r.info.status == "FINISHED" and top and where and Path(where).resolve() == out.resolve():
            return {
                "wall_s": r.data.metrics.get("wall_s"),
                "commit": r.data.tags.get("provenance.git_commit", "")[:7],
                "dirty": r.data.tags.get("provenance.git_dirty") == "true",
            }
    return None


def _duration(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(round(s))
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def row(config: str, results: Path, db: Path) -> str | None:
    """The table row for `config` from its stored run, or None when there is none to read."""
    summarize = SUMMARIES.get(config)
    out = results / _yaml(config)["output_dir"]
    text = summarize(out) if summarize else None
    if text is None:
        return None
    run = stored_run(db, config, out)
    wall = _duration(run["wall_s"]) if run else "—"
    made = f"`{run['commit']}`" + (" (uncommitted changes)" if run["dirty"] else "") if run else "no MLflow run"
    return f"| `{config}` | {wall} | {text} | {made} |"


def render(readme: str, results: Path, db: Path) -> str:
    """The README with its demo table's rows regenerated where stored runs exist, and the results paragraph."""
    start, stop = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    rows = [line for line in readme[start:stop].strip().splitlines()[2:] if line.startswith("|")]
    by_config = {re.match(r"\| `([^`]+)`", line)[1]: line for line in rows}
    for config in SUMMARIES:
        by_config.setdefault(config, f"| `{config}` | — | not run yet | — |")
    new_rows = []
    for config, old in by_config.items():
        fresh = row(config, results, db)
        if fresh is None and STALE not in old and "not run yet" not in old:
            cells = old.rstrip(" |").split(" | ")
            fresh = " | ".join(cells[:3]) + f" | {STALE} |"
        new_rows.append(fresh or old)
    body = "\n" + HEADER + "\n" + "\n".join(new_rows) + "\n"
    readme = readme[:start] + body + readme[stop:]
    demo = rates_summary(results / _yaml("demo.yaml")["output_dir"])
    if demo and RESULTS_BEGIN in readme:
        a, b = readme.index(RESULTS_BEGIN) + len(RESULTS_BEGIN), readme.index(RESULTS_END)
        readme = readme[:a] + "\n" + results_paragraph(results) + "\n" + readme[b:]
    return readme


def results_paragraph(results: Path) -> str:
    """The README's honest reading of `make demo`, from its stored dataset."""
    from lab.reporting import metrics
    from lab.reporting.report import interpret
    from lab.run import store

    o = metrics.summarize(store.read(results / _yaml("demo.yaml")["output_dir"]))
    reading = " ".join(line.removeprefix("reading: ") + "." for line in interpret(o))
    return (
        f"Results on the embedded model (`make demo`: sampled at temperature 1.0, the paper's verbatim stimuli, the "
        f"rule judge): TPR {_ci(o, 'tpr')} (n={o['n_tpr']}), FPR {_ci(o, 'fpr')} (n={o['n_fpr']}), random-vector "
        f"rate {_ci(o, 'random_rate')}, introspection {_ci(o, 'introspection')}. {reading} Every n is the number "
        "of trials behind the rate: each sampled trial is its own generation."
    )


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python bench/readme_tables.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT, help="the folder the configs' output_dir are relative to")
    ap.add_argument("--db", type=Path, default=ROOT / "mlflow.db", help="the MLflow sqlite DB the demos logged to")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the README in place")
    mode.add_argument("--check", action="store_true", help="exit 1 if the README differs from the stored runs")
    a = ap.parse_args(argv)
    old = a.readme.read_text()
    new = render(old, a.results, a.db)
    if a.write:
        a.readme.write_text(new)
    elif a.check:
        if new != old:
            print(f"error: {a.readme} is out of date with the stored runs: python bench/readme_tables.py --write")
            return 1
    else:
        print(new[new.index(BEGIN) : new.index(END) + len(END)])
    return 0


if __name__ == "__main__":
    with one_line_errors():
        raise SystemExit(main())
