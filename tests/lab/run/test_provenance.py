"""Provenance: the same config gives the same trial ids and seeds in every process; every report run carries
provenance tags and a per-trial answers table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from lab.reporting import report
from lab.run import provenance
from lab.run.tracking import TrackingConfig

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import hashlib, json, torch
from lab.steer.concepts import ConceptVector
from lab.generate.runner import VectorBank
from lab.experiments.concept_injection import InjectionConfig, plan
from lab.protocol.trials import SweepConfig
cfg = InjectionConfig(sweep=SweepConfig(concepts=("Dust", "Bread"), layers=(12,), strengths=(0.2,),
                                        controls=("random", "norm_matched", "shuffled", "negative")))
trials = plan(cfg).trials
bank = VectorBank({(c, 12): ConceptVector(c, 12, torch.arange(8.0) + i, 10.0) for i, c in enumerate(("Dust", "Bread"))},
                  {12: 3.0})
vecs = hashlib.sha256(b"".join(bank.vector(t).numpy().tobytes() for t in trials)).hexdigest()
print(json.dumps({"ids": [t.trial_id for t in trials], "seeds": [t.seed for t in trials], "vectors": vecs}))
"""


def _probe(hashseed: str) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_same_config_same_ids_seeds_and_control_vectors_in_different_processes():
    a, b = _probe("1"), _probe("4242")
    assert a == b
    assert len(a["ids"]) == 24 and len(set(a["ids"])) == 24  # 2 concepts × 2 trial numbers × (inj, ctl, 4 controls)
    assert a["ids"][0] == "43681ee8a3256e20bb8a"  # pinned: ids are sha256 of the trial's fields


def test_no_python_hash_in_seeds():
    for path in [*ROOT.glob("lab/**/*.py"), *ROOT.glob("jobs/*.py"), *ROOT.glob("training/*.py")]:
        src = path.read_text()
        assert " hash(" not in src and "(hash(" not in src, f"{path}: Python's per-process hash() used"


def test_tags_and_trial_table_on_a_report_run(tmp_path):
    params = {"model.name": "smollm2-135m", "model.dtype": "float32", "model.adapter": None, "sweep.seed": 0}
    tags = provenance.tags(params)
    assert len(tags["provenance.git_commit"]) == 40 and tags["provenance.git_dirty"] in ("true", "false")
    assert tags["provenance.model"] == "smollm2-135m"
    assert tags["provenance.config_hash"] == provenance.config_hash(dict(reversed(params.items())))
    assert tags["provenance.version.torch"] not in ("", "absent")
    df = pd.DataFrame(
        [
            dict(
                trial_id=f"t{i}",
                kind="injection" if i % 2 else "control",
                forced=False,
                layer=12,
                strength=0.2,
                concept="Dust",
                prompt="Trial 1: do you detect…",
                response=f"answer {i}",
                detected=bool(i % 2),
                identified=False,
                coherent=True,
                reason="r",
            )
            for i in range(4)
        ]
    )
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", experiment="provenance")
    rep = report.report_rates(df, tmp_path, cfg, params, "t", quiet=True)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    run = client.get_run(rep.run_id)
    assert run.data.tags["provenance.config_hash"] == tags["provenance.config_hash"]
    table = json.loads(Path(client.download_artifacts(rep.run_id, "trials.json", str(tmp_path))).read_text())
    assert table["columns"][:2] == ["trial_id", "kind"] and len(table["data"]) == 4
    assert [r[table["columns"].index("response")] for r in table["data"]] == [f"answer {i}" for i in range(4)]
