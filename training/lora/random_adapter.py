"""An untrained random LoRA adapter (the paper's random-LoRA control) written where a stage expects one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def create_random_adapter(stage: Any) -> str:
    """Write an untrained random LoRA (non-zero) at `stage.model.adapter`; returns how it was made (one line)."""
    out = Path(stage.model.adapter or "")
    base = dataclasses.replace(stage.model, adapter=None)
    try:
        from training.lora.conditions import LoraSettings
        from training.lora.trainer import train
        from training.preference.data import to_conversational
        from training.preference.synthetic import generate_pairs
    except ImportError:
        train = None
    if train is not None:
        import dataclasses as dc

        from training.lora.conditions import get_condition

        cond = dc.replace(get_condition("random_lora"), random_delta_rel=stage.adapter_delta_rel)
        rows = [to_conversational(r) for r in generate_pairs(2, seed=stage.adapter_seed)]  # unused by random_lora
        from lab.model.loading import load

        lm = load(base)
        train(
            cond,
            rows,
            output_dir=out,
            model=lm,
            seed=stage.adapter_seed,
            lora=LoraSettings(r=stage.adapter_rank, alpha=2 * stage.adapter_rank),
            overwrite=False,
        )
        how = "training.lora.trainer.train('random_lora')"
    else:  # PEFT directly: random A and B (init_lora_weights=False), rescaled to the same relative size
        import torch
        from peft import LoraConfig, get_peft_model
        from peft.tuners.lora import LoraLayer

        from lab.model.loading import load

        lm = load(base)
        torch.manual_seed(stage.adapter_seed)
        pm = get_peft_model(
            lm.model,
            LoraConfig(
                r=stage.adapter_rank,
                lora_alpha=2 * stage.adapter_rank,
                target_modules="all-linear",
                init_lora_weights=False,
                task_type="CAUSAL_LM",
            ),
        )
        with torch.no_grad():
            for mod in pm.modules():
                if isinstance(mod, LoraLayer) and "default" in mod.lora_A:
                    a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
                    delta = mod.scaling["default"] * (b @ a)
                    b.mul_(stage.adapter_delta_rel * mod.get_base_layer().weight.norm() / delta.norm().clamp(min=1e-12))
        pm.save_pretrained(str(out))
        how = "peft (init_lora_weights=False, rescaled)"
    return (
        f"created an UNTRAINED random LoRA adapter for stage '{stage.name}' at {out.resolve()} via {how} "
        f"(r={stage.adapter_rank}, ‖ΔW‖/‖W‖={stage.adapter_delta_rel:g} per layer, seed {stage.adapter_seed})"
    )
