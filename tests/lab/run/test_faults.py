"""Nothing is lost when tracking is unavailable, and an unusable results folder fails before any generation."""

from __future__ import annotations

import subprocess

from lab.run import store
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
    from lab.reporting.metrics import summarize

    want = summarize(store.read(out))
    assert run.data.metrics["n_tpr"] == want["n_tpr"] == 2 and run.data.metrics["tpr"] == want["tpr"]
    assert run.data.params["sweep.concepts"] == "Dust,Trumpets" and run.data.tags["synced_from"] == str(out)
    assert {"summary.csv", "heatmap.png"} <= {a.path for a in c.list_artifacts(run.info.run_id)}


def test_a_tracking_server_gone_at_the_end_loses_nothing(tmp_path, capsys):
    """The server answered at start-up and is gone when the run ends: the report files are written, the run id is
    None, one line says so and how to log later, and it does not hang in MLflow's retry loop."""
    import socket
    import time

    import pandas as pd

    from lab.reporting import report
    from lab.run.tracking import TrackingConfig

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = TrackingConfig(uri=f"http://127.0.0.1:{port}", experiment="gone")
    rows = pd.DataFrame(
        [
            {"concept": "Dust", "layer": 1, "strength": 2.0, "kind": k, "forced": False, "trial_number": 1}
            | {"sample": 0, "detected": d, "identified": d, "coherent": True, "parse_error": False}
            | {"response": f"r{k}", "prompt": "p", "temperature": 0.0}
            for k, d in (("injection", True), ("control", False))
        ]
    )
    t0 = time.time()
    rep = report.report_rates(rows, tmp_path, cfg, {"model.name": "x"}, "t", quiet=True)
    assert time.time() - t0 < 30 and rep.run_id is None
    assert (tmp_path / "report" / "summary.csv").is_file() and (tmp_path / "report" / "heatmap.png").is_file()
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("mlflow:  NOT logged") and "jobs.sync_mlflow --run" in out[0]
    assert rep.overall["tpr"] == 1.0 and rep.overall["fpr"] == 0.0
