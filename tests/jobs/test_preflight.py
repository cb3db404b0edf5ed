"""The preflight's parts a job does not show on its own: where paths land under `ray job submit` (lab.run.preflight
`anchor`, driven by the environment Ray gives a job's driver), the model-aware checks on a local HF folder (its
config.json, not its weights), and what `jobs.cli.Job` prints when a job fails after it started."""

from __future__ import annotations

import dataclasses
import json

import pytest

from jobs.cli import Job, configure
from lab.config import ModelConfig, from_dict
from lab.errors import LabError
from lab.experiments.concept_injection import InjectionConfig
from lab.run.preflight import anchor, check_config


def test_under_a_ray_job_relative_paths_land_in_the_submit_dir(tmp_path, monkeypatch):
    cfg = from_dict(InjectionConfig, {"output_dir": "results/x", "cache_dir": "cache", "tracking": {"uri": None}})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert anchor(cfg) is cfg  # outside Ray nothing changes
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets in a submitted job's driver
    with pytest.raises(LabError, match=r"^tracking URI sqlite:///mlflow.db: path 'mlflow.db' is relative and this"):
        anchor(cfg)
    monkeypatch.setenv("LAB_SUBMIT_DIR", str(tmp_path))
    got = anchor(cfg)
    assert got.output_dir == f"{tmp_path}/results/x" and got.cache_dir == f"{tmp_path}/cache"
    assert got.tracking.uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert got.sweep == cfg.sweep and got.model == cfg.model  # only where things are written moves
    absolute = dataclasses.replace(cfg, output_dir="/shared/out", tracking=dataclasses.replace(cfg.tracking, uri="x"))
    assert anchor(absolute).output_dir == "/shared/out"
    monkeypatch.setenv("LAB_SUBMIT_DIR", "relative/dir")
    with pytest.raises(LabError, match="LAB_SUBMIT_DIR"):
        anchor(cfg)


def test_layers_are_checked_against_a_local_models_config_json(tmp_path, monkeypatch):
    monkeypatch.setenv("INTROSPECTION_LAB_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 4}}))  # a multimodal layout
    sweep = {"layers": [3], "concepts": ["Bread"], "strengths": [1.0], "strength_mode": "raw"}
    cfg = from_dict(InjectionConfig, {"model": {"name": str(model)}, "sweep": sweep, "output_dir": str(tmp_path / "o")})
    check_config(cfg)
    bad = dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, layers=(4,)))
    with pytest.raises(LabError, match=rf"^sweep.layers: layer 4 is out of range for {model} \(0..3\)$"):
        check_config(bad)
    with pytest.raises(LabError, match=r"^unknown model 'nope'"):
        check_config(dataclasses.replace(cfg, model=ModelConfig(name="nope")))
    with pytest.raises(LabError, match="LoRA adapter not found: /no/adapter"):
        check_config(dataclasses.replace(cfg, model=ModelConfig(name=str(model), adapter="/no/adapter")))
    assert not (tmp_path / "o").exists() and not (tmp_path / "cache").exists()


def main(argv: list[str] | None = None) -> int:
    """A job that stores a shard and then fails, as a crash in its report would."""
    with Job(__name__, argv) as job:
        cfg, _ = configure(InjectionConfig, "a job that fails after storing a shard", argv)
        from pathlib import Path

        Path(cfg.output_dir).mkdir(parents=True)
        (Path(cfg.output_dir) / "shard-0.parquet").write_text("")
        raise RuntimeError("the report failed")
    return job.code


def test_a_job_that_fails_after_starting_keeps_its_work_and_names_the_rerun(tmp_path, capsys):
    out, db = tmp_path / "out", tmp_path / "mlflow.db"
    argv = ["--config", "configs/test-tiny.yaml", "--output", str(out), "--tracking-uri", f"sqlite:///{db}"]
    with pytest.raises(RuntimeError, match="the report failed"):
        main(argv)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"output: {out}  mlflow: sqlite:///{db}",
        f"kept: what was done is in {out}; rerun the report with: python -m tests.jobs.test_preflight "
        + " ".join(argv),
    ]
    assert (out / "shard-0.parquet").is_file()
