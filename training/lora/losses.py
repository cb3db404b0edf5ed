"""Pure loss functions of the ablation (torch tensors in, tensors out); the trainers only gather their inputs.

Shapes: `per_token_logps` and `mask` are `[batch, seq-1]` (next-token log-probs, already shifted; the mask is 1 on
completion tokens); sequence log-probs are `[pairs]`.
"""

from __future__ import annotations

from typing import Any

import torch


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-prob of each next token: `[B, T, V]` logits and `[B, T]` ids → `[B, T-1]` (float32)."""
    logp = torch.log_softmax(_upcast(logits[:, :-1]), dim=-1)
    return logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def sequence_logps(per_token_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of completion log-probs, number of completion tokens) per row."""
    m = mask.to(per_token_logps.dtype)
    return (per_token_logps * m).sum(dim=1), m.sum(dim=1)


def hinge_margin_loss(chosen_avg: torch.Tensor, rejected_avg: torch.Tensor, margin: float) -> torch.Tensor:
    """Per-pair contrastive hinge on length-normalised log-probs: relu(margin − (avg_c − avg_r))."""
    return torch.relu(margin - (chosen_avg - rejected_avg))


def token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(policy ‖ ref) over the vocabulary at every position: `[..., V]` → `[...]` (float32, ≥ 0)."""
    lp = torch.log_softmax(_upcast(policy_logits), dim=-1)
    lq = torch.log_softmax(_upcast(ref_logits), dim=-1)
    return (lp.exp() * (lp - lq)).sum(dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)


def margin_objective(
    per_token_logps: torch.Tensor,
    mask: torch.Tensor,
    margin: float,
    kl_per_token: torch.Tensor | None = None,
    kl_weight: float = 0.0,
) -> dict[str, Any]:
    """The `margin` / `margin_kl` loss on a `[chosen rows; rejected rows]` batch, with its parts for logging.

    loss = mean over pairs of hinge + kl_weight · (mean KL over all completion tokens of the micro-batch).
    """
    sums, counts = sequence_logps(per_token_logps, mask)
    avg = sums / counts.clamp(min=1)
    avg_c, avg_r = avg.chunk(2, dim=0)
    hinge = hinge_margin_loss(avg_c, avg_r, margin)
    loss = hinge.mean()
    kl = masked_mean(kl_per_token, mask) if kl_per_token is not None else torch.zeros((), device=loss.device)
    if kl_weight:
        loss = loss + kl_weight * kl
    sum_c, sum_r = sums.chunk(2, dim=0)
    return {
        "loss": loss,
        "hinge": hinge.mean().detach(),
        "kl": kl.detach(),
        "avg_chosen": avg_c.detach(),
        "avg_rejected": avg_r.detach(),
        "logps_chosen": sum_c.detach(),
        "logps_rejected": sum_r.detach(),
    }


def sft_objective(
    per_token_logps: torch.Tensor,
    mask: torch.Tensor,
    num_items: torch.Tensor | int | None = None,
    kl_per_token: torch.Tensor | None = None,
    kl_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Token-level NLL (+ kl_weight · KL) summed over completion tokens and divided by `num_items` (the token count
    of the whole accumulated batch, as TRL's SFTTrainer does; default: this micro-batch's)."""
    m = mask.to(per_token_logps.dtype)
    denom = torch.as_tensor(m.sum() if num_items is None else num_items, device=m.device).clamp(min=1)
    nll = -(per_token_logps * m).sum() / denom
    kl = (kl_per_token * m).sum() / denom if kl_per_token is not None else torch.zeros((), device=m.device)
    loss = nll + kl_weight * kl if kl_weight else nll
    return {"loss": loss, "nll": nll.detach(), "kl": kl.detach()}


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64, so double-precision tests stay exact)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
