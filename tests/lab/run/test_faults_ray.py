"""Faults on Ray: a model replica killed by PID mid-sweep, and a job stopped with `ray job stop` then resubmitted.
Both end with every planned trial stored exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import psutil
import pyarrow.parquet as pq
import pytest

from lab.config import from_dict, load_yaml
from lab.experiments.concept_injection import InjectionConfig, plan
from lab.run import store
from tests.conftest import PY, RAY, ROOT, env, stop_group, submit, wait_for

# 3 concepts × 2 trials × (injection, control, random) = 18 trials in 9 shards of 2: enough shards that a fault
# lands mid-sweep, small enough to stay quick on 2 cores
SMALL = {
    "sweep.concepts": "first:3",
    "sweep.layers": "[12]",
    "sweep.trials_per_concept": "2",
    "sweep.max_new_tokens": "8",
    "runner.shard_size": "2",
    "runner.batch_size": "2",
}
SETS = [a for k, v in SMALL.items() for a in ("--set", f"{k}={v}")]


def _expected() -> set[str]:
    from jobs.cli import apply_overrides

    data = apply_overrides(load_yaml(ROOT / "configs/test-tiny.yaml"), [f"{k}={v}" for k, v in SMALL.items()])
    return {t.trial_id for t in plan(from_dict(InjectionConfig, data)).trials}


def _stored_once(out) -> list[str]:
    ids = [i for f in store.shard_files(out) for i in pq.read_table(f, columns=["trial_id"])["trial_id"].to_pylist()]
    assert len(ids) == len(set(ids)), "a trial was stored twice"
    return ids


def _model_workers(root_pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in kids:
        try:
            if "ModelWorker" in " ".join(p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def test_a_replica_killed_by_pid_restarts_and_every_trial_is_stored_once(tmp_path):
    out = tmp_path / "results"
    args = [PY, "-m", "jobs.concept_injection", "--config", "configs/test-tiny.yaml", *SETS, "--output", str(out)]
    args += ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--quiet"]
    log = tmp_path / "job.log"
    with log.open("w") as f:
        job = subprocess.Popen(args, cwd=ROOT, env=env(), start_new_session=True, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(store.shard_files(out)) >= 1, 300, "the first shard")
        (worker,) = wait_for(lambda: _model_workers(job.pid), 30, "the model replica's process")
        os.kill(worker.pid, signal.SIGKILL)
        stored_at_kill = len(store.finished_ids(out))
        job.wait(timeout=600)
    finally:
        stop_group(job, grace=5)
    expected = _expected()
    assert stored_at_kill < len(expected), "the kill should land mid-sweep"
    assert job.returncode == 0, log.read_text()[-3000:]
    assert set(_stored_once(out)) == expected


# ~45 s: a job stopped mid-sweep; resume after a killed replica stays in the default suite
@pytest.mark.slow
def test_ray_job_stop_then_resubmit_resumes(ray_head, tmp_path):
    address, client = ray_head
    out = tmp_path / "results"
    entry = ["python", "-m", "jobs.concept_injection", "--config", "configs/test-tiny.yaml", *SETS]
    entry += ["--output", str(out), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--quiet"]
    first = f"stop-{uuid.uuid4().hex[:8]}"
    cmd = [RAY, "job", "submit", "--address", address, "--submission-id", first, "--no-wait", "--working-dir", "."]
    cmd += ["--runtime-env", "cluster/runtime-env.yaml", "--", *entry]
    wait_for(
        lambda: (
            subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120).returncode == 0
            or None
        ),
        120,
        "the job agent to take the first submission",
        interval=3,
    )
    wait_for(lambda: len(store.shard_files(out)) >= 1, 400, "the first shard of the submitted job")
    stop = subprocess.run(
        [RAY, "job", "stop", "--address", address, first], cwd=ROOT, env=env(), capture_output=True, text=True
    )
    assert stop.returncode == 0, stop.stdout + stop.stderr
    wait_for(lambda: str(client.get_job_status(first)).endswith("STOPPED"), 60, "the job to stop")
    done = len(store.finished_ids(out))
    expected = _expected()
    assert done < len(expected), "the stop should land mid-sweep"

    second = f"resume-{uuid.uuid4().hex[:8]}"
    proc = submit(address, second, entry, timeout=600)
    logs = client.get_job_logs(second)
    assert str(client.get_job_status(second)).endswith("SUCCEEDED"), proc.stdout + proc.stderr + logs
    assert f"{len(expected) - done} generated now, {done} already stored" in logs
    assert set(_stored_once(out)) == expected
