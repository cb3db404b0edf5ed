"""The condition registry, the paper presets and condition configs from YAML-like dicts."""

from __future__ import annotations

import dataclasses

import pytest

from lab.errors import LabError
from training.lora.conditions import (
    CONDITIONS,
    PAPER_HPARAMS,
    PAPER_LORA,
    Condition,
    TrainHParams,
    condition_from_dict,
    get_condition,
)


def test_registry_holds_every_arm_of_the_ablation() -> None:
    want = {
        "dpo",
        "dpo_no_ref",
        "dpo_shuffled",
        "dpo_reversed",
        "margin",
        "margin_kl",
        "sft_chosen",
        "sft_rejected",
        "sft_kl",
        "sft_kl_rejected",
        "random_lora",
        "random_lora_peft",
    }
    assert want <= set(CONDITIONS)
    c = CONDITIONS
    assert (c["dpo"].objective, c["dpo"].beta, c["dpo"].reference) == ("dpo", 0.1, "adapter_disabled")
    assert c["dpo_no_ref"].reference == "zero"
    assert (c["dpo_shuffled"].swap_prob, c["dpo_reversed"].swap_prob) == (0.5, 1.0)
    assert (c["margin"].objective, c["margin"].margin, c["margin"].kl_weight) == ("margin", 1.0, 0.0)
    assert c["margin_kl"].kl_weight == 0.1 and c["sft_kl"].kl_weight == 0.1
    assert (c["sft_rejected"].sft_target, c["sft_kl"].sft_target) == ("rejected", "chosen")
    assert c["random_lora"].objective == "none" and c["random_lora"].random_delta_rel > 0
    assert (c["random_lora_peft"].objective, c["random_lora_peft"].random_init) == ("none", "peft")
    assert all(cond.description for cond in CONDITIONS.values())
    help_text = {f.name: f.metadata.get("help") for f in dataclasses.fields(Condition)}
    assert all(help_text[k] for k in ("objective", "beta", "reference", "kl_weight", "domains"))


def test_paper_presets() -> None:
    assert (PAPER_LORA.r, PAPER_LORA.alpha, PAPER_LORA.dropout, PAPER_LORA.target_modules) == (
        64,
        128,
        0.0,
        ("all-linear",),
    )
    cfg = PAPER_LORA.peft_config()
    assert cfg.r == 64 and cfg.lora_alpha == 128 and cfg.target_modules == "all-linear"
    hp = PAPER_HPARAMS
    assert (hp.learning_rate, hp.epochs, hp.per_device_batch_size, hp.gradient_accumulation_steps) == (1e-5, 1, 1, 8)
    assert (hp.max_length, hp.lr_scheduler, hp.gradient_checkpointing, hp.optim) == (
        2048,
        "linear",
        True,
        "adamw_torch",
    )
    assert hp.total_steps(4500) == 563  # ceil(4500 / 8)
    assert hp.warmup_steps(563) == 50 and hp.warmup_steps(200) == 20 and hp.warmup_steps(5) == 0
    assert TrainHParams(max_steps=7).total_steps(10_000) == 7
    assert hp.total_steps(4500, world_size=4) == 141


def test_domain_subsets_as_a_condition_option() -> None:
    c = get_condition("dpo@code,math")
    assert c.domains == ("code", "math") and c.name == "dpo@code,math" and c.objective == "dpo"
    assert CONDITIONS["margin"].with_domains(["safety"]).name == "margin@safety"
    with pytest.raises(LabError, match="unknown training condition 'dpoo'"):
        get_condition("dpoo")


def test_condition_from_dict() -> None:
    c = condition_from_dict({"name": "dpo", "beta": 0.2, "domains": ["science"]})
    assert (c.name, c.beta, c.domains, c.objective) == ("dpo@science", 0.2, ("science",), "dpo")
    c2 = condition_from_dict({"base": "margin_kl", "name": "margin_kl_strong", "kl_weight": 1.0})
    assert (c2.name, c2.objective, c2.kl_weight, c2.margin) == ("margin_kl_strong", "margin", 1.0, 1.0)
    with pytest.raises(LabError, match="unknown config key 'condition.betta'"):
        condition_from_dict({"name": "dpo", "betta": 0.2})
    with pytest.raises(LabError, match="'condition.objective' must be one of"):
        condition_from_dict({"name": "x", "objective": "ppo"})
    with pytest.raises(LabError, match="needs a 'name' or a 'base'"):
        condition_from_dict({})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"objective": "dpo", "beta": 0.0}, "beta must be > 0"),
        ({"objective": "dpo", "swap_prob": 2.0}, "swap_prob"),
        ({"objective": "dpo", "kl_weight": 0.1}, "kl_weight applies to the margin and sft"),
        ({"objective": "margin", "reference": "zero"}, "reference 'zero' applies to the dpo objective"),
        ({"objective": "none"}, "random_delta_rel > 0 goes with objective 'none'"),
        ({"objective": "sft", "random_delta_rel": 0.1}, "random_delta_rel > 0 goes with objective 'none'"),
    ],
)
def test_invalid_conditions(kwargs: dict, message: str) -> None:
    with pytest.raises(LabError, match=message):
        Condition(name="x", **kwargs)


def test_ablation_template_parses() -> None:
    from pathlib import Path

    from lab.config import from_dict, load_yaml
    from training.lora.conditions import LoraSettings

    spec = load_yaml(Path(__file__).resolve().parents[2] / "configs" / "ablations-dpo-components.yaml")
    conds = [condition_from_dict(c) for c in spec["conditions"]]
    assert {c.name for c in conds} >= set(CONDITIONS) and "dpo@code" in {c.name for c in conds}
    assert from_dict(LoraSettings, spec["lora"]) == PAPER_LORA
    # validation during training needs eval data, so it is on in the preset files but not in the code default
    assert from_dict(TrainHParams, spec["hparams"]) == dataclasses.replace(
        PAPER_HPARAMS, eval_steps=200, early_stopping_patience=10
    )  # patience = 10 (safety-research/introspection-mechanisms experiments/03f_dpo_mechanism_ablation.py:1680)
