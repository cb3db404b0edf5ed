"""The registry and the paper presets carry the paper's models and settings (no model is loaded)."""

from __future__ import annotations

from lab.config import load_yaml
from lab.model.loading import REGISTRY
from tests.conftest import ROOT


def test_registry_matches_the_paper():
    assert REGISTRY["qwen3-235b-a22b"].source == "Qwen/Qwen3-235B-A22B-Instruct-2507"
    assert REGISTRY["qwen3-235b-a22b"].template_kwargs == ()  # the Instruct-2507 template has no thinking switch
    for stage in ("base", "sft", "dpo", "instruct"):
        assert REGISTRY[f"olmo-3.1-32b-{stage}"].default_layers == (25, 32, 38, 44, 51)  # 0.4 … 0.8 of 64 layers
    assert all(s.sampling == "generation_config" for s in REGISTRY.values() if s.source != "embedded")
    # the GGUF conversions have no generation_config of their own
    embedded = {n: s.sampling for n, s in REGISTRY.items() if s.source == "embedded"}
    assert embedded == {"smollm2-135m": "plain", "gemma3-270m": "plain"}
    assert not REGISTRY["gemma-3-27b-it"].system_role and REGISTRY["smollm2-135m"].system_role
    assert not REGISTRY["gemma3-270m"].system_role  # Gemma 3's template folds system text into the first user turn


def test_paper_presets_use_the_paper_judge_and_sampling():
    for name in ("concept-injection-gemma-3-27b-it", "concept-injection-qwen3-235b-a22b", "stages-olmo-3.1-32b"):
        cfg = load_yaml(ROOT / f"configs/{name}.yaml")
        judge = cfg["judge"]["options"] | {"name": cfg["judge"]["name"]}
        want = {"name": "openai", "model": "gpt-4.1-mini", "prompt": "paper", "max_tokens": 500}
        assert want.items() <= judge.items()
        sweep = cfg["sweep"]
        assert (sweep["temperature"], sweep["trials_per_concept"], sweep["samples"], sweep["max_new_tokens"]) == (
            1.0,
            10,
            10,
            100,
        )
    ablation = load_yaml(ROOT / "configs/ablations-olmo-3.1-32b.yaml")["evaluation"]
    assert ablation["sweep"]["temperature"] == 1.0 and ablation["judge"]["options"]["prompt"] == "paper"
