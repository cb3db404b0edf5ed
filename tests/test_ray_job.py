"""A real local Ray head (tests/conftest.py); the tiny sweep goes through `ray job submit`; its Parquet and MLflow run are read back."""
from __future__ import annotations

import uuid

from tests.conftest import submit


def test_submit_tiny_sweep_and_read_back(ray_head, tmp_path):
    address, client = ray_head
    out, db = tmp_path / "results", tmp_path / "mlflow.db"
    sid = f"test-{uuid.uuid4().hex[:8]}"
    proc = submit(address, sid, ["python", "-m", "jobs.concept_injection", "--config", "configs/test-tiny.yaml",
                                 "--output", str(out), "--tracking-uri", f"sqlite:///{db}", "--quiet"], timeout=600)
    logs = client.get_job_logs(sid)
    assert str(client.get_job_status(sid)) in ("SUCCEEDED", "JobStatus.SUCCEEDED"), proc.stdout + proc.stderr + logs
    assert "overall" in logs and "mlflow:  run" in logs

    from lab import store

    df = store.read(out)
    assert len(df) == 2 * 3 and df["trial_id"].is_unique  # 2 concepts × (injection, control, random)
    assert set(df["kind"]) == {"injection", "control", "random"}
    assert df["response"].str.len().gt(0).all() and df["judge"].eq("rules").all()

    import mlflow

    client_ml = mlflow.MlflowClient(f"sqlite:///{db}")
    exp = client_ml.get_experiment_by_name("concept-injection-test")
    runs = client_ml.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["model.name"] == "smollm2-135m" and run.data.params["sweep.layers"] == "12"
    assert 0.0 <= run.data.metrics["tpr"] <= 1.0 and "fpr_hi" in run.data.metrics
    arts = {a.path for a in client_ml.list_artifacts(run.info.run_id)}
    assert {"heatmap.png", "summary.csv"} <= arts
