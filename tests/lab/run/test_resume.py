"""Kill the job mid-sweep (SIGKILL, whole process group) and rerun: no duplicate and no missing trial ids."""

from __future__ import annotations

import subprocess

import pyarrow.parquet as pq
import pytest

from lab.config import from_dict, load_yaml
from lab.experiments.concept_injection import InjectionConfig, plan
from lab.run import store
from tests.conftest import PY, ROOT, env, stop_group, wait_for

CONFIG = "configs/test-resume.yaml"


@pytest.mark.slow  # the same ground in the default suite: tests/lab/run/test_faults_ray.py stops a job mid-sweep and resubmits it
def test_kill_and_rerun_completes_exactly(tmp_path):
    out = tmp_path / "results"
    args = [
        PY,
        "-m",
        "jobs.concept_injection",
        "--config",
        CONFIG,
        "--output",
        str(out),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
        "--quiet",
    ]
    expected = {t.trial_id for t in plan(from_dict(InjectionConfig, load_yaml(ROOT / CONFIG))).trials}
    first = subprocess.Popen(
        args, cwd=ROOT, env=env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: len(store.shard_files(out)) >= 1, 300, "the first shard")
    finally:
        stop_group(first, grace=0)  # SIGTERM then SIGKILL right away: a crash, not a clean exit
    done_at_kill = store.finished_ids(out)
    assert 0 < len(done_at_kill) < len(expected), "the kill should land mid-sweep"

    second = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"{len(expected) - len(done_at_kill)} generated now, {len(done_at_kill)} already stored" in second.stdout

    ids = [i for f in store.shard_files(out) for i in pq.read_table(f, columns=["trial_id"])["trial_id"].to_pylist()]
    assert len(ids) == len(set(ids)), "duplicate trial ids across shards"
    assert set(ids) == expected
    again = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"0 generated now, {len(expected)} already stored" in again.stdout
