"""A real local Ray head; the tiny sweep goes through `ray job submit`; its Parquet and MLflow run are read back."""
from __future__ import annotations

import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import PY, ROOT, env, free_port, stop_group, wait_for

RAY = str(Path(PY).parent / "ray")


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` on loopback (node 127.0.0.2, dashboard 127.0.0.1); stopped by PID afterwards."""
    port, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.2",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", f"--temp-dir={temp}",
         "--disable-usage-stats", "--include-dashboard=true"],
        env=env(), cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        from ray.job_submission import JobSubmissionClient

        wait_for(lambda: _client_ok(address), 90, "the Ray dashboard")
        yield address, JobSubmissionClient(address)
    finally:
        stop_group(proc, grace=30)


def _client_ok(address: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{address}/api/version", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_submit_tiny_sweep_and_read_back(ray_head, tmp_path):
    address, client = ray_head
    out, db = tmp_path / "results", tmp_path / "mlflow.db"
    sid = f"test-{uuid.uuid4().hex[:8]}"
    cmd = [RAY, "job", "submit", "--address", address, "--submission-id", sid, "--working-dir", ".",
           "--runtime-env", "cluster/runtime-env.yaml", "--",
           "python", "-m", "jobs.concept_injection", "--config", "configs/test-tiny.yaml",
           "--output", str(out), "--tracking-uri", f"sqlite:///{db}", "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
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
