"""What `ray job submit --working-dir . --runtime-env cluster/runtime-env.yaml` uploads: Ray's own packer run on a
project-shaped tree with the usual secrets and bulky outputs beside the code. Only code and configs go."""

from __future__ import annotations

import zipfile

import yaml
from ray._private.runtime_env.packaging import create_package

from tests.conftest import ROOT

CODE = ["lab/x.py", "jobs/y.py", "configs/demo.yaml", "cluster/runtime-env.yaml", "README.md"]
KEPT_OUT = [
    ".env",
    ".env.local",
    "secrets/judge.txt",
    "deploy/id_rsa",
    "certs/server.pem",
    "api.key",
    ".netrc",
    "artifacts/mlflow-ui.png",
    ".venv/bin/python",
    ".git/config",
    "results/demo/shard-0.parquet",
    "mlflow.db",
    "mlartifacts/1/a.png",
    ".cache/model.safetensors",
    "lab/__pycache__/x.cpython-311.pyc",
]


def test_the_runtime_env_uploads_code_and_no_secret(tmp_path):
    tree = tmp_path / "project"
    for rel in CODE + KEPT_OUT:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    excludes = yaml.safe_load((ROOT / "cluster/runtime-env.yaml").read_text())["excludes"]
    pkg = tmp_path / "pkg.zip"
    create_package(str(tree), pkg, include_gitignore=False, excludes=excludes)
    with zipfile.ZipFile(pkg) as z:
        packed = sorted(n for n in z.namelist() if not n.endswith("/"))
    assert packed == sorted(CODE)
