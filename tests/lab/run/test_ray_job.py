"""A real local Ray head (tests/conftest.py); the tiny sweep goes through `ray job submit`; its Parquet and MLflow run
are read back."""

from __future__ import annotations

import uuid

from tests.conftest import submit

# configs/test-tiny.yaml (2 concepts at layer 12: 2 injected trials, 2 controls; Wilson 95 % bounds). The two
# greedy controls are the same prompt (trial 1), so FPR's interval stands on one distinct generation.
PINNED_RATES = {"tpr": 0.0, "tpr_lo": 0.0, "tpr_hi": 0.6576, "fpr": 0.0, "fpr_lo": 0.0, "fpr_hi": 0.7935}
PINNED_DETECTED = {"injection": 0, "control": 0, "random": 1}  # rows judged "detected", per kind


def test_submit_tiny_sweep_and_read_back(ray_head, tmp_path):
    address, client = ray_head
    out, db = tmp_path / "results", tmp_path / "mlflow.db"
    sid = f"test-{uuid.uuid4().hex[:8]}"
    proc = submit(
        address,
        sid,
        [
            "python",
            "-m",
            "jobs.concept_injection",
            "--config",
            "configs/test-tiny.yaml",
            "--output",
            str(out),
            "--tracking-uri",
            f"sqlite:///{db}",
            "--quiet",
        ],
        timeout=600,
    )
    logs = client.get_job_logs(sid)
    assert str(client.get_job_status(sid)) in ("SUCCEEDED", "JobStatus.SUCCEEDED"), proc.stdout + proc.stderr + logs
    assert "overall" in logs and "mlflow:  run" in logs

    from lab.run import store

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
    got = {k: round(run.data.metrics[k], 4) for k in ("tpr", "tpr_lo", "tpr_hi", "fpr", "fpr_lo", "fpr_hi")}
    assert got == PINNED_RATES  # greedy decoding on the embedded model: the same numbers every run
    assert (run.data.metrics["n_fpr"], run.data.metrics["trials_fpr"]) == (1, 2)
    assert df.groupby("kind")["detected"].sum().astype(int).to_dict() == PINNED_DETECTED
    arts = {a.path for a in client_ml.list_artifacts(run.info.run_id)}
    assert {"heatmap.png", "summary.csv"} <= arts
