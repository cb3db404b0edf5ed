"""Nothing is lost when tracking is unavailable, and an unusable results folder fails before any generation."""

from __future__ import annotations

import subprocess

from lab import store
from tests.conftest import PY, ROOT, env

TINY = ["--config", "configs/test-tiny.yaml", "--set", "runner.num_actors=0", "--quiet"]


def test_unwritable_results_folder_fails_first_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = subprocess.run(
        [
            PY,
            "-m",
            "jobs.concept_injection",
            *TINY,
            "--output",
            str(blocker / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
        ],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: output folder {blocker / 'out'} is not writable ({blocker} is not a directory)"
    ]
    assert not (tmp_path / "mlflow.db").exists()


def test_a_run_without_tracking_is_synced_later(tmp_path):
    from mlflow.tracking import MlflowClient

    out, db = tmp_path / "out", f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run(
        [PY, "-m", "jobs.concept_injection", *TINY, "--output", str(out), "--set", "tracking.enabled=false"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists() and len(store.read(out)) == 6
    synced = subprocess.run(
        [PY, "-m", "jobs.sync_mlflow", "--run", str(out), "--tracking-uri", db],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert synced.returncode == 0, synced.stderr[-2000:]
    c = MlflowClient(db)
    (run,) = c.search_runs([c.get_experiment_by_name("concept-injection-test").experiment_id])
    from lab.metrics import summarize

    want = summarize(store.read(out))
    assert run.data.metrics["n_tpr"] == want["n_tpr"] == 2 and run.data.metrics["tpr"] == want["tpr"]
    assert run.data.params["sweep.concepts"] == "Dust,Trumpets" and run.data.tags["synced_from"] == str(out)
    assert {"summary.csv", "heatmap.png"} <= {a.path for a in c.list_artifacts(run.info.run_id)}
