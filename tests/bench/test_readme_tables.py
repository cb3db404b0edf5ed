"""bench/readme_tables.py: the README's demo rows come from stored runs (figures from the stored outputs, wall time
and commit from the MLflow run that wrote them); a row without a stored run is marked with the date it was measured;
`--check` fails while the README differs from what the stored runs say."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lab.errors import LabError

ROOT = Path(__file__).resolve().parents[2]

README = """# x

<!-- readme_tables:demos -->
| demo config | wall time | what it printed |
| --- | --- | --- |
| `geometry-demo.yaml` | 2 min 40 s | PC1·mean-diff 0.57, PC1·refusal 0.05; ridge nested-CV R² −0.03 |
| `gates-demo.yaml` | 2 min 32 s | "no gate" |
<!-- /readme_tables:demos -->
"""


def _script():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "bench" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _stored_geometry(root: Path) -> Path:
    """A stored geometry-demo output under `root`/results and its finished MLflow run in `root`/mlflow.db."""
    from lab.run import tracking

    out = root / "results" / "geometry-demo"
    (out / "analysis").mkdir(parents=True)
    (out / "analysis" / "geometry.json").write_text(
        json.dumps({"pc1_meandiff_cos": 0.6359, "pc1_refusal_cos": 0.047, "ridge_r2": -0.032})
    )
    db = root / "mlflow.db"
    cfg = tracking.TrackingConfig(uri=f"sqlite:///{db}", experiment="geometry-demo")
    with tracking.run(cfg, {"output_dir": str(out)}, tags={"provenance.git_commit": "abcdef0123"}, run_name="geometry"):
        pass
    return db


def test_rows_are_regenerated_from_stored_runs(tmp_path):

    db = _stored_geometry(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    rt = _script()
    assert rt.main(["--results", str(tmp_path), "--db", str(db), "--readme", str(readme), "--check"]) == 1
    assert rt.main(["--results", str(tmp_path), "--db", str(db), "--readme", str(readme), "--write"]) == 0
    rows = [line for line in readme.read_text().splitlines() if line.startswith("| `")]
    geometry, gates, *new = rows  # the README's two rows, then one "not run yet" row per other summarised config
    assert geometry.startswith("| `geometry-demo.yaml` | ") and geometry.endswith(
        " | PC1·mean-diff 0.64, PC1·refusal 0.05; ridge nested-CV R² −0.03 | `abcdef0` |"
    )
    wall = geometry.split(" | ")[1]
    assert wall.endswith(" s") and wall != "2 min 40 s"  # the run's own wall_s, not the old figure
    assert (
        gates
        == '| `gates-demo.yaml` | 2 min 32 s | "no gate" | measured 2026-12-01 on an older commit; not rerun since |'
    )
    assert new == [
        f"| `{c}` | — | not run yet | — |" for c in rt.SUMMARIES if c not in ("geometry-demo.yaml", "gates-demo.yaml")
    ]
    assert rt.main(["--results", str(tmp_path), "--db", str(db), "--readme", str(readme), "--check"]) == 0


def test_the_readme_is_what_its_stored_runs_and_marks_say():
    """The committed README has the markers and a row for every demo the script summarises."""
    text = (ROOT / "README.md").read_text()
    rt = _script()
    block = text[text.index(rt.BEGIN) : text.index(rt.END)]
    for config in rt.SUMMARIES:
        assert f"| `{config}` |" in block
    assert all(line.count(" | ") == 3 for line in block.splitlines() if line.startswith("| `"))


def test_repeated_results_take_each_row_from_the_first_clone_that_ran_it(tmp_path):
    """Demos run in two clones, each with its own mlflow.db: `--results B --results A` takes the geometry row from A
    (B has no stored run of it) with A's wall time and commit; `--db` with several --results is refused in one line."""

    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    _stored_geometry(a)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    rt = _script()
    assert rt.main(["--results", str(b), "--results", str(a), "--readme", str(readme), "--write"]) == 0
    geo = next(line for line in readme.read_text().splitlines() if line.startswith("| `geometry-demo.yaml`"))
    assert "PC1·mean-diff 0.64, PC1·refusal 0.05" in geo and geo.endswith("| `abcdef0` |")
    with_db = ["--results", str(a), "--results", str(b), "--db", str(a / "mlflow.db"), "--readme", str(readme)]
    with pytest.raises(LabError, match="^--db and --made-in go with a single --results"):
        rt.main(with_db)
