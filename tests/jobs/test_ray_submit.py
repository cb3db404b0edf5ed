"""Results land where the user looks: the README's `ray job submit` of a mechanism job (patching, shrunk to two
concepts at one layer), from a user's project folder, with no --output and no --tracking-uri. Ray runs the job in a
temporary copy of the working dir (`…/_ray_pkg_…`, deleted with the job); the relative `output_dir` and the default
`sqlite:///mlflow.db` must land in the user's folder, named absolutely at start and end of the job's log. Without
`LAB_SUBMIT_DIR` the job refuses in one line before any work. A real Ray head (tests/conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest

from tests.conftest import RAY, ROOT, env

pytestmark = pytest.mark.slow  # a Ray head, two job submissions and a model load: about a minute on a quiet machine

TINY = ["--set", "concepts=first:2", "--set", "patch_layers=[13]", "--set", "components=[attn_out]"]
TINY += ["--set", "runner.num_actors=0", "--quiet"]


def _project(tmp_path):
    """A user's checkout: the package and its configs (what `--working-dir .` uploads)."""
    project = tmp_path / "my project"  # a space, as a user's folder may have
    for d in ("lab", "jobs", "analysis", "training", "cluster", "configs"):
        shutil.copytree(ROOT / d, project / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    return project


def _submit(address: str, sid: str, project, entrypoint: list[str]) -> subprocess.CompletedProcess:
    """The README's command, run from the user's project folder."""
    cmd = [RAY, "job", "submit", "--address", address, "--submission-id", sid, "--working-dir", "."]
    cmd += ["--runtime-env", "cluster/runtime-env.yaml", "--", *entrypoint]
    for _ in range(20):  # on a loaded machine the job agent may come up well after the dashboard
        proc = subprocess.run(cmd, cwd=project, env=env(), capture_output=True, text=True, timeout=900)
        if "No available agent" not in proc.stdout + proc.stderr:
            return proc
        time.sleep(3)
    raise AssertionError("the Ray job agent never came up")


def test_readme_submit_lands_results_and_mlflow_run_in_the_users_folder(ray_head, tmp_path):
    address, client = ray_head
    project = _project(tmp_path)
    job = ["python", "-m", "jobs.patching", "--config", "configs/patching-demo.yaml", *TINY]

    refused = f"refused-{uuid.uuid4().hex[:8]}"
    _submit(address, refused, project, job)
    logs = client.get_job_logs(refused)
    assert str(client.get_job_status(refused)).endswith("FAILED"), logs
    hint = [line for line in logs.splitlines() if line.startswith("error: ")]
    assert len(hint) == 1 and hint[0].startswith(
        "error: tracking URI sqlite:///mlflow.db: path 'mlflow.db' is relative"
    )
    assert 'submit with `-- env LAB_SUBMIT_DIR="$PWD" python -m jobs.…` (README) or give an absolute path' in hint[0]
    assert not (project / "results").exists() and not (project / "mlflow.db").exists()

    sid = f"lands-{uuid.uuid4().hex[:8]}"
    proc = _submit(address, sid, project, ["env", f"LAB_SUBMIT_DIR={project}", *job])  # the user's shell: "$PWD"
    logs = client.get_job_logs(sid)
    assert str(client.get_job_status(sid)).endswith("SUCCEEDED"), proc.stdout + proc.stderr + logs
    out = project / "results" / "patching-demo"
    where = f"output: {out}  mlflow: sqlite:///{project}/mlflow.db"
    assert logs.count(where) == 2, logs  # at start and at end
    assert len(list((out / "patching").glob("shard-*.parquet"))) >= 1 and (out / "report").is_dir()

    import mlflow

    client_ml = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    exp = client_ml.get_experiment_by_name("patching-demo")
    runs = client_ml.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["output_dir"] == str(out)
    assert (project / "mlartifacts").is_dir()  # artifacts beside the DB, not in Ray's copy
