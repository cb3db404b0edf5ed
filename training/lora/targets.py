"""Which modules a LoRA adapter adapts: the lab's rule for `target_modules: [all-linear]`, the same on every
architecture, stated here instead of left to PEFT's defaults.

    adapted    every nn.Linear inside the language model's decoder blocks: attention q/k/v/o, the dense MLP's
               gate/up/down, a MoE block's shared expert (Qwen2-MoE style) where there is one
    never      the LM head and the input embedding; a vision tower and the multimodal projector
               (Gemma3ForConditionalGeneration: the adapter trains the text model only — PEFT's own "all-linear"
               adapts the SigLIP tower too); a MoE block's routed experts and its router

MoE experts are excluded on purpose: transformers 5 stores them fused ([experts, d_ff, d] parameters), and PEFT's
"all-linear" then adds a LoRA per fused tensor with its rank multiplied by the expert count plus a LoRA on the
router, which changes which experts run. The lab's adapters (the paper's recipe, for dense models) therefore adapt a
MoE model's attention (and shared expert) only; adapting the experts would be a deliberate new rule here.
The rule is one regular expression over module names (PEFT full-matches it), built from the model's own layout
(`lab.model.loading.decoder_layers`); tests/lab/architectures/test_lora.py checks it on every architecture class.
"""

from __future__ import annotations

import re
from typing import Any

_ROUTERS = ("gate", "router")


def all_linear(model: Any) -> str:
    """A regex (PEFT `target_modules`) matching exactly the modules the rule above adapts in `model`."""
    import torch

    from lab.errors import LabError
    from lab.model.loading import decoder_layers

    layers = decoder_layers(model)
    prefix = next(name for name, mod in model.named_modules() if mod is layers)
    inside: set[str] = set()
    for block in layers:
        skip = set()
        for name, mod in block.named_modules():
            if hasattr(mod, "experts"):  # a MoE block: its routed experts and router stay frozen
                skip |= {f"{name}.experts" if name else "experts"} | {f"{name}.{r}" if name else r for r in _ROUTERS}
        for name, mod in block.named_modules():
            if isinstance(mod, torch.nn.Linear) and not any(name == s or name.startswith(s + ".") for s in skip):
                inside.add(name)
    if not inside:
        raise LabError(f"no linear layer to adapt in the decoder blocks of {type(model).__name__}")
    return rf"{re.escape(prefix)}\.\d+\.(?:{'|'.join(re.escape(n) for n in sorted(inside))})"
