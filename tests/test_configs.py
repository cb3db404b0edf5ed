"""Every file in configs/ builds with the config class of the job it belongs to, and round-trips through
`lab.config.to_dict` → YAML → `from_dict` to an equal object. No job runs; a new config file must be mapped here."""

from __future__ import annotations

import importlib

import pytest
import yaml

from lab.config import from_dict, load_yaml, to_dict
from tests.conftest import ROOT

# file → (job module under jobs/, the config class that module exposes)
INJECTION = ("concept_injection", "InjectionConfig")
ABLATION = ("train_ablations", "AblationConfig")
JOBS: dict[str, tuple[str, str]] = {
    "ablations-demo.yaml": ABLATION,
    "ablations-dpo-components.yaml": ABLATION,
    "ablations-olmo-3.1-32b.yaml": ABLATION,
    "abliteration-demo.yaml": ("abliteration", "AbliterationConfig"),
    "abliteration-gemma-3-27b-it.yaml": ("abliteration", "AbliterationConfig"),
    "bidirectional-demo.yaml": ("bidirectional", "BidirectionalConfig"),
    "concept-injection-gemma-3-27b-it.yaml": INJECTION,
    "concept-injection-qwen3-235b-a22b.yaml": INJECTION,
    "calibrate-dose-demo.yaml": ("calibrate_dose", "DoseConfig"),
    "demo.yaml": INJECTION,
    "feature-regression-demo.yaml": ("feature_regression", "FeatureRegressionConfig"),
    "localisation-demo.yaml": ("localisation", "LocalisationConfig"),
    "patching-demo.yaml": ("patching", "PatchingConfig"),
    "transcoders-demo.yaml": ("transcoders", "TranscodersJob"),
    "dose-response-demo.yaml": ("dose_response", "DoseResponseConfig"),
    "gates-demo.yaml": ("gates", "GatesConfig"),
    "geometry-demo.yaml": ("geometry", "GeometryConfig"),
    "judge-hf.yaml": INJECTION,  # a sweep's `judge:` section (also read by jobs.regrade / jobs.judge_agreement)
    "judge-openai-local.yaml": INJECTION,
    "judge-openai.yaml": INJECTION,
    "judge-paper-local.yaml": INJECTION,
    "judge-serve.yaml": ("serve_judge", "ServeJudgeConfig"),
    "probes-demo.yaml": ("probes", "ProbesConfig"),
    "robustness-demo.yaml": ("robustness", "RobustnessConfig"),
    "stages-demo.yaml": ("stages", "StagesConfig"),
    "stages-olmo-3.1-32b.yaml": ("stages", "StagesConfig"),
    "steering-vector-demo.yaml": ("steering_vector", "SteeringVectorConfig"),
    "test-ablations-tiny.yaml": ABLATION,
    "test-resume.yaml": INJECTION,
    "test-tiny.yaml": INJECTION,
}


def test_every_config_file_is_mapped_to_a_job() -> None:
    assert sorted(p.name for p in (ROOT / "configs").glob("*.y*ml")) == sorted(JOBS)


@pytest.mark.parametrize("name", sorted(JOBS))
def test_config_builds_and_round_trips(name: str) -> None:
    module, cls_name = JOBS[name]
    cls = getattr(importlib.import_module(f"jobs.{module}"), cls_name)
    cfg = from_dict(cls, load_yaml(ROOT / "configs" / name))
    data = to_dict(cfg)
    again = from_dict(cls, yaml.safe_load(yaml.safe_dump(data, sort_keys=False)))
    assert again == cfg and to_dict(again) == data


@pytest.mark.parametrize("name", sorted(n for n in JOBS if n.startswith("judge-") and n != "judge-serve.yaml"))
def test_judge_files_name_only_known_options(name: str) -> None:
    from lab.judges import check_judge_options

    judge = load_yaml(ROOT / "configs" / name)["judge"]
    check_judge_options(judge["name"], judge.get("options") or {})
