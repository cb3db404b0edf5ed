"""Every file in configs/ builds with the config class of the job it belongs to, and round-trips through
`lab.config.to_dict` → YAML → `from_dict` to an equal object. No job runs; a new config file must be mapped here."""

from __future__ import annotations

import importlib

import pytest
import yaml

from lab.config import for_model, from_dict, load_yaml, to_dict
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
    "bidirectional-gemma-3-27b-it.yaml": ("bidirectional", "BidirectionalConfig"),
    "concept-injection-gemma-3-27b-it.yaml": INJECTION,
    "concept-injection-qwen3-235b-a22b.yaml": INJECTION,
    "calibrate-dose-demo.yaml": ("calibrate_dose", "DoseCalibrationConfig"),
    "demo.yaml": INJECTION,
    "demo-greedy.yaml": INJECTION,
    "feature-regression-demo.yaml": ("feature_regression", "FeatureRegressionConfig"),
    "feature-regression-gemma-3-27b-it.yaml": ("feature_regression", "FeatureRegressionConfig"),
    "localisation-demo.yaml": ("localisation", "LocalisationConfig"),
    "patching-demo.yaml": ("patching", "PatchingConfig"),
    "patching-gemma-3-27b-it.yaml": ("patching", "PatchingConfig"),
    "transcoders-demo.yaml": ("transcoders", "TranscodersJob"),
    "dose-response-demo.yaml": ("dose_response", "DoseResponseConfig"),
    "gates-demo.yaml": ("gates", "GatesConfig"),
    "gates-gemma-3-27b-it.yaml": ("gates", "GatesConfig"),
    "geometry-demo.yaml": ("geometry", "GeometryConfig"),
    "geometry-gemma-3-27b-it.yaml": ("geometry", "GeometryConfig"),
    "judge-hf.yaml": INJECTION,  # a sweep's `judge:` section (also read by jobs.regrade / jobs.judge_agreement)
    "judge-openai-local.yaml": INJECTION,
    "judge-openai.yaml": INJECTION,
    "judge-paper-local.yaml": INJECTION,
    "judge-serve.yaml": ("serve_judge", "ServeJudgeConfig"),
    "probes-demo.yaml": ("probes", "ProbesConfig"),
    "robustness-demo.yaml": ("robustness", "RobustnessConfig"),
    "robustness-gemma-3-27b-it.yaml": ("robustness", "RobustnessConfig"),
    "robustness-qwen3-235b-a22b.yaml": ("robustness", "RobustnessConfig"),
    "stages-demo.yaml": ("stages", "StagesConfig"),
    "stages-olmo-3.1-32b.yaml": ("stages", "StagesConfig"),
    "steering-vector-demo.yaml": ("steering_vector", "SteeringVectorConfig"),
    "steering-vector-gemma-3-27b-it.yaml": ("steering_vector", "SteeringVectorConfig"),
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
    cfg = from_dict(cls, for_model(load_yaml(ROOT / "configs" / name)))
    data = to_dict(cfg)
    again = from_dict(cls, yaml.safe_load(yaml.safe_dump(data, sort_keys=False)))
    assert again == cfg and to_dict(again) == data


@pytest.mark.parametrize("name", sorted(n for n in JOBS if n.startswith("judge-") and n != "judge-serve.yaml"))
def test_judge_files_name_only_known_options(name: str) -> None:
    from lab.judges import check_judge_options

    judge = load_yaml(ROOT / "configs" / name)["judge"]
    check_judge_options(judge["name"], judge.get("options") or {})


def _fields_without_help(cls: type, seen: set[type]) -> list[str]:
    """Every init field reachable from config class `cls` (nested sections included) that has no help text."""
    import dataclasses
    import typing

    if cls in seen:
        return []
    seen.add(cls)
    hints, out = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if f.init and not f.metadata.get("help"):
            out.append(f"{cls.__module__}.{cls.__qualname__}.{f.name}")
        for tp in (hints[f.name], *typing.get_args(hints[f.name])):
            if dataclasses.is_dataclass(tp):
                out += _fields_without_help(tp, seen)
    return out


def test_every_config_key_has_help() -> None:
    """`--show-config` documents every key a YAML file can set, so each field carries a help text."""
    seen: set[type] = set()
    missing = [m for module, cls in set(JOBS.values()) for m in _fields_without_help(_cls(module, cls), seen)]
    assert sorted(missing) == [] and len(seen) >= 30


def _cls(module: str, name: str) -> type:
    return getattr(importlib.import_module(f"jobs.{module}"), name)


@pytest.mark.parametrize("name", sorted(JOBS))
def test_show_config_text_loads_back(name: str) -> None:
    from lab.config import describe

    cls = _cls(*JOBS[name])
    cfg = from_dict(cls, for_model(load_yaml(ROOT / "configs" / name)))
    assert from_dict(cls, yaml.safe_load(describe(cfg))) == cfg


def test_show_config_prints_the_resolved_config_and_exits(capsys) -> None:
    from jobs.concept_injection import main

    with pytest.raises(SystemExit) as stop:
        main(["--config", "configs/demo.yaml", "--set", "sweep.layers=[3, 5]", "--show-config"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert "  layers: [3, 5]  # 0-based blocks; empty = the model's defaults\n" in out
    assert out.startswith("model:  # the model that is injected and answers\n  name: smollm2-135m  # registry name")
    assert all("  # " in line for line in out.splitlines())  # sections too: every key carries its help


def test_unknown_key_suggests_the_nearest() -> None:
    from jobs.concept_injection import InjectionConfig
    from lab.errors import LabError

    with pytest.raises(LabError, match=r"^unknown config key 'sweep.layer' \(did you mean 'layers'\? known keys: "):
        from_dict(InjectionConfig, {"sweep": {"layer": [3]}})


def test_per_model_block_applies_to_the_model_run_and_set_still_wins() -> None:
    """A config's `per_model:` overrides apply only when its model is the one run (after `--set model.name`), deep
    merged; a `--set` of the same key wins; a malformed block fails in one line."""
    from lab.config import apply_overrides
    from lab.errors import LabError

    def load(*sets: str) -> dict:
        data = {
            "model": {"name": "smollm2-135m"},
            "dose": {"inject_layer": 12, "layers": [18, 26], "strengths": [0.1]},
            "per_model": {"gemma3-270m": {"dose": {"inject_layer": 8, "layers": [11, 16]}}},
        }
        return for_model(apply_overrides(data, sets), sets)

    assert load() == {
        "model": {"name": "smollm2-135m"},
        "dose": {"inject_layer": 12, "layers": [18, 26], "strengths": [0.1]},
    }
    gemma = load("model.name=gemma3-270m")
    assert gemma["dose"] == {"inject_layer": 8, "layers": [11, 16], "strengths": [0.1]}
    assert load("model.name=gemma3-270m", "dose.layers=[5]")["dose"]["layers"] == [5]
    with pytest.raises(LabError, match="^per_model must map a model name to a mapping of config overrides$"):
        for_model({"per_model": {"gemma3-270m": [8]}})


def test_stages_without_their_own_model_run_the_top_level_one() -> None:
    """`--set model.name=gemma3-270m` on configs/stages-demo.yaml swaps both stages (the random LoRA stays on)."""
    from lab.config import apply_overrides
    from lab.experiments.stages import StagesConfig

    sets = ["model.name=gemma3-270m"]
    cfg = from_dict(StagesConfig, for_model(apply_overrides(load_yaml(ROOT / "configs/stages-demo.yaml"), sets), sets))
    models = [cfg.injection(s).model for s in cfg.stages]
    assert [m.name for m in models] == ["gemma3-270m", "gemma3-270m"]
    assert models[0].adapter is None and models[1].adapter.endswith("results/stages-demo/adapters/random-lora")
