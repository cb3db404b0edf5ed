"""Minimal TRL 1.16 subclasses for the losses TRL has no built-in for.

* `PreferenceTrainer(DPOTrainer)`: objective `dpo` is TRL's own sigmoid loss untouched (reference log-probs
  precomputed with the adapter disabled, or zero columns for `reference="zero"`); objective `margin` replaces
  `_compute_loss` with the length-normalised hinge (+ optional KL to the frozen model = adapter disabled).
* `SFTKLTrainer(SFTTrainer)`: `kl_weight == 0` is TRL's SFT loss untouched; otherwise one full-logit forward gives
  the NLL and KL(policy ‖ adapter-disabled model) per completion token, both normalised like TRL's NLL.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from trl import DPOTrainer, SFTTrainer
from trl.models.utils import disable_gradient_checkpointing

from training.lora.conditions import Condition
from training.lora.losses import margin_objective, sft_objective, token_kl, token_logps


def reference_logits(trainer: Any, model: Any, model_kwargs: dict[str, Any]) -> torch.Tensor:
    """Logits of the frozen model: the same PEFT model with its adapter disabled, no grad, no checkpointing."""
    unwrapped = trainer.accelerator.unwrap_model(model)
    with (
        torch.no_grad(),
        disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs),
        unwrapped.disable_adapter(),
    ):
        return model(**model_kwargs).logits


def _mean(trainer: Any, t: torch.Tensor) -> float:
    return trainer.accelerator.gather_for_metrics(t.detach().float().reshape(-1)).mean().item()


class PreferenceTrainer(DPOTrainer):
    """DPOTrainer whose data pipeline (tokenisation, collation of [chosen; rejected]) serves every pairwise loss."""

    def __init__(self, *args: Any, condition: Condition, **kwargs: Any):
        self.condition = condition  # read by _precompute_ref_logps during DPOTrainer.__init__
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        if self.condition.reference != "zero":
            return super()._precompute_ref_logps(dataset, name, batch_size)
        zeros = [0.0] * len(dataset)
        return dataset.add_column("ref_chosen_logps", zeros).add_column("ref_rejected_logps", zeros)

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        if self.condition.objective == "dpo":
            return super()._compute_loss(model, inputs, return_outputs)
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"][:, 1:]
        kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "use_cache": False}
        kl = None
        if self.condition.kl_weight > 0:
            logits = model(**kwargs).logits
            per_token = token_logps(logits, inputs["input_ids"])
            kl = token_kl(logits[:, :-1], reference_logits(self, model, kwargs)[:, :-1])
        else:
            labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
            per_token = model(**kwargs, labels=labels, fused_lm_head=True).log_probs[:, -mask.size(1) :]
        parts = margin_objective(per_token, mask, self.condition.margin, kl, self.condition.kl_weight)
        m = self._metrics[mode]
        m["loss/hinge"].append(_mean(self, parts["hinge"]))
        m["kl"].append(_mean(self, parts["kl"]))
        m["logps/chosen"].append(_mean(self, parts["logps_chosen"]))
        m["logps/rejected"].append(_mean(self, parts["logps_rejected"]))
        m["avg_logps/chosen"].append(_mean(self, parts["avg_chosen"]))
        m["avg_logps/rejected"].append(_mean(self, parts["avg_rejected"]))
        m["rewards/margins"].append(_mean(self, parts["avg_chosen"] - parts["avg_rejected"]))
        m["rewards/accuracies"].append(_mean(self, (parts["avg_chosen"] > parts["avg_rejected"]).float()))
        loss = parts["loss"]
        return (loss, types.SimpleNamespace(logits=None)) if return_outputs else loss


class SFTKLTrainer(SFTTrainer):
    """SFTTrainer on prompt/completion rows with an optional KL penalty towards the frozen (adapter-disabled) model."""

    def __init__(self, *args: Any, kl_weight: float = 0.0, **kwargs: Any):
        self.kl_weight = kl_weight
        super().__init__(*args, **kwargs)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if not self.kl_weight:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        kwargs = {k: v for k, v in inputs.items() if k != "labels"}
        kwargs["use_cache"] = False
        logits = model(**kwargs).logits
        per_token = token_logps(logits, inputs["input_ids"])
        mask = inputs["labels"][:, 1:] != -100
        kl = token_kl(logits[:, :-1], reference_logits(self, model, kwargs)[:, :-1])
        parts = sft_objective(per_token, mask, num_items_in_batch, kl, self.kl_weight)
        loss = parts["loss"]
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        n_tok = mask.sum().clamp(min=1)
        self._metrics[mode]["nll"].append(_mean(self, -(per_token * mask).sum() / n_tok))
        self._metrics[mode]["kl"].append(_mean(self, (kl * mask).sum() / n_tok))
        return (loss, types.SimpleNamespace(logits=logits.detach())) if return_outputs else loss
