"""The researcher's view of an experiment in the MLflow UI (3.17): every run listed, with the headline rates as
columns.

By default the UI's runs table nests child runs under a collapsed parent and shows no metric column. Its saved views
are experiment tags `mlflow.sharedViewState.<key>` (an envelope `{name, createdAt, state}` whose state holds the
search facets and the table's columns), opened with `?viewStateShareKey=<key>` or picked from the views menu above
the table. Expanded rows are not part of a saved view, but the table lists child runs flat beside their parent when
it is sorted by anything other than the start time — so the lab's view (`rates`) sorts by TPR and selects the rate
columns. MLflow shows a metric with every digit it has (0.3333333333333333) and has no display format, so
`lab.run.tracking` logs each headline rate twice: at full precision under its own name (`tpr`, `tpr_lo`, …, what
every reader of the store uses) and rounded to 3 decimals under `display/` (`display/tpr`, `display/tpr_lo`,
`display/tpr_hi`), which the view shows with the n behind the rates and the job's wall time (`wall_s`).
`lab.run.tracking.ensure_experiment` adds it to every experiment the lab creates; `make ui` prints its link per
experiment (`python -m lab.run.mlflow_view --db mlflow.db --port 5000`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from lab.errors import ArgumentParser, LabError, one_line_errors

VIEW_KEY = "rates"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
DISPLAY = "display/"
DISPLAY_DIGITS = 3
ROUNDED = ("tpr", "fpr", "introspection", "forced_id", "random_rate", "norm_matched_rate", "shuffled_rate")
VIEW_RATES = ("tpr", "fpr", "introspection", "random_rate", "norm_matched_rate")  # with their intervals, in the view
RATE_COLUMNS = (
    *(f"{DISPLAY}{k}{part}" for k in VIEW_RATES for part in ("", "_lo", "_hi")),
    "n_tpr",
    "n_fpr",
    "wall_s",
)
TAG_COLUMNS = ("condition", "seed")


def display_copies(metrics: dict[str, float]) -> dict[str, float]:
    """`display/<rate>` (and its `_lo`/`_hi`) rounded to 3 decimals, for the overall headline rates in `metrics`
    (already finite floats); the full-precision values stay under their own names."""
    return {
        f"{DISPLAY}{k}": round(metrics[k], DISPLAY_DIGITS)
        for k in (f"{r}{part}" for r in ROUNDED for part in ("", "_lo", "_hi"))
        if k in metrics
    }


def view_state() -> dict:
    """Search facets and table settings in the UI's own keys (`metrics.\\`name\\`` is its column/sort key)."""
    return {
        "searchFilter": "",
        "orderByKey": f"metrics.`{DISPLAY}tpr`",
        "orderByAsc": False,
        "selectedColumns": [f"metrics.`{m}`" for m in RATE_COLUMNS] + [f"tags.`{t}`" for t in TAG_COLUMNS],
    }


def view_tag_value(now_ms: int | None = None) -> str:
    """The experiment tag's value: the saved-view envelope MLflow's UI reads."""
    created = int(time.time() * 1000) if now_ms is None else now_ms
    return json.dumps({"name": VIEW_KEY, "createdAt": created, "state": json.dumps(view_state())})


def is_current(tag_value: str) -> bool:
    """Whether a stored view tag holds this version's view (an older lab's view lacks the interval columns)."""
    try:
        return json.loads(json.loads(tag_value)["state"]) == view_state()
    except (ValueError, KeyError, TypeError):
        return False


def view_path(experiment_id: str) -> str:
    """The view's address below the UI's root (model-training workflow, not the GenAI overview)."""
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def experiments_with_view(db: str | Path) -> list[tuple[str, str]]:
    """(id, name) of the active experiments in an MLflow sqlite store that carry the view, oldest first."""
    if not Path(db).is_file():
        return []
    con = sqlite3.connect(f"file:{Path(db).resolve()}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT e.experiment_id, e.name FROM experiments e JOIN experiment_tags t "
            "ON t.experiment_id = e.experiment_id WHERE t.key = ? AND e.lifecycle_stage = 'active' "
            "ORDER BY e.experiment_id",
            (VIEW_TAG,),
        ).fetchall()
    except sqlite3.Error:  # not (yet) an MLflow store
        return []
    finally:
        con.close()
    return [(str(i), n) for i, n in rows]


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(
        prog="python -m lab.run.mlflow_view",
        description="print the researcher's view link of each experiment in an MLflow DB",
    )
    ap.add_argument("--db", default="mlflow.db")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000)
    args = ap.parse_args(argv)
    if not 0 < args.port < 65536:
        raise LabError(f"--port must be 1..65535, got {args.port}")
    if not Path(args.db).is_file():
        raise LabError(f"--db {args.db}: no such MLflow database file")
    for exp_id, name in experiments_with_view(args.db):
        print(f"  {name}: http://{args.host}:{args.port}/{view_path(exp_id)}")
    return 0


if __name__ == "__main__":
    with one_line_errors():
        raise SystemExit(main())
