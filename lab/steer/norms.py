"""The RMS norms between the residual stream and the Yes/No readout, as numbers: the final norm and each block's
pre-MLP norm (found in the model: `lab.model.sites.pre_mlp_norm`), their elementwise scales, their epsilon and the RMS they divide by; and
`readout_tensors`, what the analysis (`analysis.gates`, which linearises the norms) needs of the model to run without
it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lab.errors import LabError
from lab.model.loading import decoder_layers
from lab.model.sites import pre_mlp_norm
from lab.steer.readouts import NO_VARIANTS, YES_VARIANTS, variant_token_ids


def final_norm(model: Any) -> torch.nn.Module:
    layers = decoder_layers(model)
    inner = [m for m in model.modules() if hasattr(m, "norm") and hasattr(m, "layers") and m.layers is layers]
    if not inner:
        raise ValueError(f"cannot find the final norm of {type(model).__name__}")
    return inner[0].norm


def norm_scale(norm: torch.nn.Module) -> torch.Tensor:
    """The elementwise weight an RMSNorm multiplies by (Gemma's norms multiply by 1 + weight)."""
    w = norm.weight.detach().float().cpu()
    return 1.0 + w if "Gemma" in type(norm).__name__ else w


def norm_eps(norm: torch.nn.Module) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.sqrt(x.float().pow(2).mean(-1) + eps)


def readout_tensors(lm: Any, layers: Sequence[int]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What the analysis needs of the model to run without it: the final norm's scale, the unembedding rows of
    the Yes/No variants, and each listed block's pre-MLP norm scale; plus the row indices of Yes and No."""
    yes, no = variant_token_ids(lm.tokenizer, YES_VARIANTS), variant_token_ids(lm.tokenizer, NO_VARIANTS)
    model = lm.model
    t = {
        "final_norm_weight": norm_scale(final_norm(model)),
        "unembed_yes_no": model.get_output_embeddings().weight.detach().float().cpu()[yes + no].contiguous(),
    }
    for lay in layers:
        norm = pre_mlp_norm(decoder_layers(model)[lay])
        if norm is None:  # OLMo 2/3: the MLP reads the residual itself, there is no norm scale to linearise
            raise LabError(f"block {lay} of {type(model).__name__} has no pre-MLP norm (its MLP reads the residual)")
        t[f"mlp_norm_weight.{lay}"] = norm_scale(norm)
    return t, {
        "yes_ids": yes,
        "no_ids": no,
        "yes_rows": list(range(len(yes))),
        "no_rows": list(range(len(yes), len(yes) + len(no))),
    }
