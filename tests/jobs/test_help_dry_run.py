"""Every job's `--help` reads `python -m jobs.X`, lists its config sections (from the config dataclass) and points at
`--show-config`; every job's `--dry-run` loads the config, plans, prints the trial count, judge and settings and
exits 0 with no model loaded, no Ray started and nothing written (the lab cache is pointed at an empty place: a
model load would convert the embedded model into it). In process, one case per job."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest

from tests.conftest import ROOT
from tests.jobs.test_bad_inputs import CONFIG_JOBS, _tree, entry_points

JOBS = [m for m in entry_points() if m.startswith("jobs.")]
# config class of each --config job (its --help lists these sections)
CLASSES = {
    "jobs.concept_injection": "InjectionConfig",
    "jobs.abliteration": "AbliterationConfig",
    "jobs.bidirectional": "BidirectionalConfig",
    "jobs.calibrate_dose": "DoseCalibrationConfig",
    "jobs.dose_response": "DoseResponseConfig",
    "jobs.feature_regression": "FeatureRegressionConfig",
    "jobs.gates": "GatesConfig",
    "jobs.geometry": "GeometryConfig",
    "jobs.localisation": "LocalisationConfig",
    "jobs.patching": "PatchingConfig",
    "jobs.probes": "ProbesConfig",
    "jobs.robustness": "RobustnessConfig",
    "jobs.stages": "StagesConfig",
    "jobs.steering_vector": "SteeringVectorConfig",
    "jobs.train_ablations": "AblationConfig",
    "jobs.transcoders": "TranscodersJob",
    "jobs.serve_judge": "ServeJudgeConfig",
}
# --dry-run's first lines on the demo configs: the planned count, then the judge
DRY = {
    # 10 concepts × 3 layers × 3 strengths × 2 trial numbers = 180 injections, each with a control and a random vector
    "jobs.concept_injection": ("trials: 540", "judge: rules"),
    "jobs.abliteration": ("trials: 480 trials (the same sweep on the original and on the abliterated model)", "rules"),
    # 8 synthetic concepts, τ 0.5: 4 successes and 4 failures, each concept in one pair: 2 + 2 pairs
    "jobs.bidirectional": ("trials: 8 injected differences (A − B and B − A of 4 pairs), each 2 trials", "rules"),
    "jobs.calibrate_dose": ("trials: 180", "judge: rules"),  # 4 concepts × 3 layers × 5 strengths × (inj + random)
    "jobs.dose_response": ("trials: 10", "judge: none (no judged generations)"),  # one per concept
    "jobs.feature_regression": ("trials: 20 concepts × 2 trials, then the fits", "judge: rules"),
    "jobs.gates": ("trials: 10 dose-response concepts over 1 model(s), then the causal gate tests", "judge: none"),
    "jobs.geometry": ("trials: 240 sweep trials, then part injections (proj, resid) of each concept", "rules"),
    "jobs.localisation": ("trials: 252", "judge: rules"),  # 6 concepts × layers 2, 6, …, 26 (7) × 2 × 3 kinds
    "jobs.patching": ("trials: 40", "judge: none"),
    "jobs.probes": ("trials: 432", "judge: none"),
    "jobs.robustness": ("trials: 108 trials over 12 cells", "judge: rules"),
    "jobs.stages": ("trials: 60 trials over 2 stages", "judge: rules"),
    "jobs.steering_vector": ("trials: 3 arms (Ray Tune trials)", "judge: rules"),
    "jobs.train_ablations": ("trials: 5", "judge: rules"),  # 5 conditions × 1 seed
    "jobs.transcoders": ("trials: 3 transcoders (layers)", "judge: none"),
}


def test_every_job_is_covered():
    assert set(JOBS) == set(CLASSES) | {"jobs.judge_agreement", "jobs.regrade", "jobs.sync_mlflow"}


@pytest.mark.parametrize("module", JOBS)
def test_help_reads_python_m_and_lists_the_config_sections(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert out.startswith(f"usage: python -m {module} ") and ".py" not in out.splitlines()[0]
    assert "--dry-run" in out
    if module in CLASSES:
        cls = getattr(importlib.import_module(module), CLASSES[module])
        assert "config sections and keys (every key with its help and value: --config FILE --show-config):" in out
        listed = out.split("--show-config):\n", 1)[1]
        for f in dataclasses.fields(cls):
            if f.init:
                assert f"\n  {f.name} " in "\n" + listed, f.name


@pytest.fixture
def quiet_place(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("INTROSPECTION_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


def _geometry(tmp_path):
    """A stored geometry result (pure functions of analysis.geometry on 8 synthetic concept vectors)."""
    import numpy as np
    import pandas as pd
    import torch

    from analysis import geometry as geo

    rng = np.random.default_rng(0)
    concepts = [f"c{i}" for i in range(8)]
    X = rng.normal(size=(8, 16))
    rates = pd.DataFrame({"concept": concepts, "rate": [0.0, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9], "n": 4})
    V = {c: torch.tensor(X[i], dtype=torch.float32) for i, c in enumerate(concepts)}
    adir = geo.save_inputs(tmp_path / "geometry" / "analysis", V, rates, None, 12)
    g, _ = geo.analyse(X, rates["rate"].to_numpy(float), concepts, None, 0.5)
    g.extra = dict(layer=12, strength=0.3, strength_mode="relative", resid_norm=10.0, model="smollm2-135m", source="")
    geo.write_result(g, adir)
    return tmp_path / "geometry"


@pytest.mark.parametrize("module", sorted(DRY))
def test_dry_run_plans_and_prints_without_running(module, quiet_place, capsys):
    tmp_path = quiet_place
    extra = ["--set", f"geometry={_geometry(tmp_path)}"] if module == "jobs.bidirectional" else []
    argv = ["--config", str(ROOT / "configs" / CONFIG_JOBS[module][0]), "--output", str(tmp_path / "out"), *extra]
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main([*argv, "--dry-run"])
    out = capsys.readouterr().out.splitlines()
    assert stop.value.code == 0
    assert out[0] == f"dry run of python -m {module}: nothing loaded, nothing written"
    count, judge = DRY[module]
    assert out[1].startswith(count) and judge in out[2], out
    assert out[3].startswith("settings: ") and "model.name=smollm2-135m" in out[3] or module == "jobs.stages"
    assert out[4] == f"output: {tmp_path / 'out'}  mlflow: sqlite:///{tmp_path}/mlflow.db"
    assert _tree(tmp_path) == before  # no output, no tracking DB, no lab cache (no model was converted or loaded)
    assert not _ray_started()


@pytest.mark.parametrize("module", sorted(DRY))
def test_every_demo_config_plans_on_the_second_embedded_model(module, quiet_place, capsys):
    """`--set model.name=gemma3-270m` on every demo config: its layers exist on Gemma 3 270M (18 blocks; the
    `per_model:` block of a config names Gemma's own where SmolLM2's would not fit), so the preflight, which reads
    the model's config, refuses nothing."""
    tmp_path = quiet_place
    extra = ["--set", f"geometry={_geometry(tmp_path)}"] if module == "jobs.bidirectional" else []
    argv = ["--config", str(ROOT / "configs" / CONFIG_JOBS[module][0]), "--output", str(tmp_path / "out"), *extra]
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main([*argv, "--set", "model.name=gemma3-270m", "--dry-run"])
    out = capsys.readouterr().out.splitlines()
    # layer sweeps over the model's depth: localisation every 4th block from 2 (Gemma's 18: 2, 6, 10, 14, where
    # SmolLM2's 30 give 7); patching every 4th after the injection layer 12 (13, 17: 2 layers × 2 components × 4)
    count = {"jobs.localisation": "trials: 144", "jobs.patching": "trials: 16"}.get(module, DRY[module][0])
    assert stop.value.code == 0 and out[1].startswith(count), out
    assert "model.name=gemma3-270m" in out[3], out
    assert not [line for line in out if line.startswith("preflight: ")], out


def _ray_started() -> bool:
    import sys

    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def test_dry_run_of_the_jobs_without_a_config(quiet_place, capsys):
    tmp_path = quiet_place
    import pandas as pd

    from jobs import judge_agreement, regrade, serve_judge, sync_mlflow

    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"trial_id": ["a", "b"], "concept": ["Dust", "Dust"], "response": ["No.", "Yes, dust."]}).to_parquet(
        run / "shard-0.parquet", index=False
    )
    (run / "config.yaml").write_text(json.dumps({"judge": {"name": "rules"}}))
    before = _tree(tmp_path)
    assert judge_agreement.main(["--dry-run"]) == 0
    assert regrade.main(["--run", str(run), "--judge", "rules", "--dry-run"]) == 0
    assert sync_mlflow.main(["--run", str(run), "--dry-run"]) == 0
    assert serve_judge.main(["--config", str(ROOT / "configs/judge-serve.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dry run: 220 labelled answers from ") and out[0].endswith(" by judge rules")
    assert out[1] == f"dry run: 2 stored trials in {run} would be regraded by judge rules into {run}/verdicts/rules"
    assert out[2] == f"dry run: 2 stored trials in {run} would be logged (judge rules)"
    assert out[3].startswith("dry run: would serve smollm2-135m as ")
    assert _tree(tmp_path) == before and not _ray_started()


# every paper preset, its job, and its planned count as --dry-run prints it in a fresh clone (no weights, no inputs
# made by other jobs, no API key: what a real run would need is printed as the preflight's refusal, not an error)
PRESETS = {
    "ablations-olmo-3.1-32b.yaml": ("jobs.train_ablations", "trials: 20", "OPENAI_API_KEY"),
    "abliteration-gemma-3-27b-it.yaml": ("jobs.abliteration", "trials: 9000 trials", ""),
    "bidirectional-gemma-3-27b-it.yaml": ("jobs.bidirectional", "trials: not plannable", "/results/geometry"),
    "concept-injection-gemma-3-27b-it.yaml": ("jobs.concept_injection", "trials: 100000", ""),
    "concept-injection-qwen3-235b-a22b.yaml": ("jobs.concept_injection", "trials: 100000", ""),
    "feature-regression-gemma-3-27b-it.yaml": ("jobs.feature_regression", "trials: 500 concepts", "sweep_dir"),
    "gates-gemma-3-27b-it.yaml": ("jobs.gates", "trials: 50 dose-response concepts", "transcoders.dir"),
    "geometry-gemma-3-27b-it.yaml": ("jobs.geometry", "trials: 0 sweep trials", "source"),
    "patching-gemma-3-27b-it.yaml": ("jobs.patching", "trials: 2592", ""),
    "robustness-gemma-3-27b-it.yaml": ("jobs.robustness", "trials: 12000 trials over 12 cells", ""),
    "robustness-qwen3-235b-a22b.yaml": ("jobs.robustness", "trials: 12000 trials over 12 cells", ""),
    "stages-olmo-3.1-32b.yaml": ("jobs.stages", "trials: 1600000 trials over 4 stages", ""),
    "steering-vector-gemma-3-27b-it.yaml": ("jobs.steering_vector", "trials: 2 arms", ""),
}


def test_every_paper_preset_is_listed():
    names = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    paper = {n for n in names if any(m in n for m in ("gemma-3-27b-it", "olmo-3.1-32b", "qwen3-235b"))}
    assert paper == set(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_paper_preset_plans_with_dry_run(preset, quiet_place, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    module, count, refusal = PRESETS[preset]
    before = _tree(quiet_place)
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main(["--config", str(ROOT / "configs" / preset), "--dry-run"])
    out = capsys.readouterr().out.splitlines()
    assert stop.value.code == 0
    assert out[0] == f"dry run of python -m {module}: nothing loaded, nothing written"
    assert out[1].startswith(count), out
    assert out[2].startswith("judge: ") and out[3].startswith("settings: ")
    refused = [line for line in out if line.startswith("preflight: a real run would stop here: ")]
    assert (refusal in refused[0]) if refusal else not refused, out
    assert _tree(quiet_place) == before and not _ray_started()
