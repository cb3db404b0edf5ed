"""Named training conditions of the DPO-component ablation, plus the paper's LoRA / optimiser presets.

A `Condition` says *what* is optimised (objective, reference, data transform, data domains); `LoraSettings` and
`TrainHParams` say *how* (paper preset by default). All three are frozen dataclasses; build them from YAML with
`condition_from_dict` / `lab.config.from_dict`. `get_condition("dpo@code,math")` is the `dpo` condition restricted
to the code and math domains.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from lab.config import from_dict, to_dict
from lab.errors import LabError
from lab.registry import Registry

Objective = Literal["dpo", "margin", "sft", "none"]


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter shape (paper: r 64, alpha 128, all linear layers, dropout 0)."""

    r: int = field(default=64, metadata={"help": "LoRA rank"})
    alpha: int = field(default=128, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    target_modules: tuple[str, ...] = field(
        default=("all-linear",),
        metadata={
            "help": "module names, or 'all-linear': every linear layer of the decoder blocks (never lm_head, a "
            "vision tower, MoE experts or router: training/lora/targets.py)"
        },
    )

    def peft_config(self, init_lora_weights: bool = True, model: Any = None) -> Any:
        """The PEFT config; with `model`, 'all-linear' becomes the lab's explicit rule for that model
        (training/lora/targets.py: what every training path uses); without, PEFT's own "all-linear" (the same
        modules on a dense text model, not on a MoE or a multimodal wrapper)."""
        from peft import LoraConfig

        from training.lora.targets import all_linear

        targets: Any = list(self.target_modules)
        if self.target_modules == ("all-linear",):
            targets = "all-linear" if model is None else all_linear(model)
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
            bias="none",
            task_type="CAUSAL_LM",
            init_lora_weights=init_lora_weights,
        )


@dataclass(frozen=True)
class TrainHParams:
    """Optimiser and schedule (paper: AdamW lr 1e-5, 1 epoch, 1 × 8 accumulation, max length 2048, linear, warm-up
    min(50, 10 % of steps), weight decay 0.01, gradient checkpointing; validation every 200 steps with patience and
    the best checkpoint restored — `eval_steps` 0 (the default) turns validation during training off)."""

    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW peak learning rate"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training data"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps; > 0 overrides epochs"})
    per_device_batch_size: int = field(default=1, metadata={"help": "pairs (or SFT rows) per micro-batch"})
    gradient_accumulation_steps: int = field(default=8, metadata={"help": "micro-batches per optimizer step"})
    max_length: int = field(default=2048, metadata={"help": "tokens per sequence (prompt + completion)"})
    lr_scheduler: str = field(default="linear", metadata={"help": "transformers scheduler name"})
    warmup_max_steps: int = field(default=50, metadata={"help": "warm-up is min(this, warmup_fraction · steps)"})
    warmup_fraction: float = field(default=0.1, metadata={"help": "warm-up share of the optimizer steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (torch's default, the paper's)"})
    gradient_checkpointing: bool = field(default=True, metadata={"help": "recompute activations in backward"})
    logging_steps: int = field(default=1, metadata={"help": "log the loss every this many optimizer steps"})
    optim: str = field(default="adamw_torch", metadata={"help": "transformers optimizer name"})
    ref_batch_size: int = field(
        default=8,
        metadata={
            "help": "pairs per forward when precomputing DPO reference "
            "log-probs (no gradients, so larger than training)"
        },
    )
    eval_steps: int = field(
        default=0,
        metadata={
            "help": "> 0: eval loss every this many optimizer steps, checkpoint "
            "each time, restore the best (lowest eval_loss) at the end"
        },
    )
    early_stopping_patience: int = field(
        default=0,
        metadata={"help": "> 0 (with eval_steps): stop after this many evaluations without a better eval_loss"},
    )

    def __post_init__(self) -> None:
        if self.eval_steps < 0 or self.early_stopping_patience < 0:
            raise LabError("hparams: eval_steps and early_stopping_patience must be >= 0")
        if self.early_stopping_patience > 0 and self.eval_steps == 0:
            raise LabError("hparams: early_stopping_patience needs eval_steps > 0")

    def warmup_steps(self, total_steps: int) -> int:
        return max(0, min(self.warmup_max_steps, int(self.warmup_fraction * total_steps)))

    def total_steps(self, n_rows: int, world_size: int = 1) -> int:
        """Optimizer steps of a run over `n_rows` rows (what the schedule and the warm-up are computed from)."""
        if self.max_steps > 0:
            return self.max_steps
        per_step = self.per_device_batch_size * world_size * self.gradient_accumulation_steps
        per_epoch = max(1, math.ceil(n_rows / per_step))
        return max(1, math.ceil(per_epoch * self.epochs))


@dataclass(frozen=True)
class Condition:
    """One arm of the ablation. Losses are averaged over the pairs (or tokens, for SFT) of a micro-batch."""

    name: str = field(metadata={"help": "registry name (a domain subset adds '@domain,...')"})
    objective: Objective = field(
        metadata={
            "help": (
                "dpo: -logsigmoid(beta·((πc−refc)−(πr−refr))) with sequence log-probs; "
                "margin: relu(margin − (πc/|c| − πr/|r|)) on length-normalised log-probs, no reference; "
                "sft: mean NLL of the target completion tokens; none: no training (random_lora)"
            )
        }
    )
    description: str = field(default="", metadata={"help": "one line for reports"})
    beta: float = field(default=0.1, metadata={"help": "DPO inverse temperature"})
    reference: Literal["adapter_disabled", "zero"] = field(
        default="adapter_disabled",
        metadata={"help": "DPO reference log-probs: precomputed with the LoRA adapter disabled, or set to zero"},
    )
    swap_prob: float = field(default=0.0, metadata={"help": "swap chosen/rejected per pair with this probability"})
    margin: float = field(default=1.0, metadata={"help": "hinge margin on length-normalised log-probs"})
    kl_weight: float = field(
        default=0.0,
        metadata={"help": "weight of KL(policy ‖ frozen model) per completion token, frozen = adapter disabled"},
    )
    sft_target: Literal["chosen", "rejected"] = field(default="chosen", metadata={"help": "SFT completion"})
    random_delta_rel: float = field(
        default=0.0,
        metadata={
            "help": "random_lora: ‖ΔW‖_F / ‖W‖_F of the untrained adapter on every adapted layer (B is non-zero)"
        },
    )
    random_init: Literal["norm_matched", "peft"] = field(
        default="norm_matched",
        metadata={
            "help": "objective none: norm_matched = random B scaled to random_delta_rel; peft = PEFT's own random init "
            "(init_lora_weights=False, no rescaling: the paper's control)"
        },
    )
    domains: tuple[str, ...] = field(default=(), metadata={"help": "train on these data domains only (empty: all)"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        where = f"condition '{self.name}'"
        if self.beta <= 0 or not math.isfinite(self.beta):
            raise LabError(f"{where}: beta must be > 0, got {self.beta}")
        if not 0.0 <= self.swap_prob <= 1.0:
            raise LabError(f"{where}: swap_prob must be in [0, 1], got {self.swap_prob}")
        if self.margin < 0 or self.kl_weight < 0:
            raise LabError(f"{where}: margin and kl_weight must be >= 0")
        if self.kl_weight > 0 and self.objective not in ("margin", "sft"):
            raise LabError(f"{where}: kl_weight applies to the margin and sft objectives, not '{self.objective}'")
        if self.reference == "zero" and self.objective != "dpo":
            raise LabError(f"{where}: reference 'zero' applies to the dpo objective only")
        if self.random_init not in ("norm_matched", "peft"):
            raise LabError(f"{where}: random_init must be 'norm_matched' or 'peft', got {self.random_init!r}")
        untrained = self.random_delta_rel > 0 if self.random_init == "norm_matched" else self.random_delta_rel == 0
        if (self.objective == "none") != untrained or (self.random_init == "peft" and self.objective != "none"):
            raise LabError(
                f"{where}: random_delta_rel > 0 goes with objective 'none' (and only with it); "
                "random_init 'peft' goes with objective 'none' and no random_delta_rel"
            )

    def with_domains(self, domains: tuple[str, ...] | list[str]) -> Condition:
        doms = tuple(domains)
        base = self.name.split("@", 1)[0]
        return dataclasses.replace(self, name=f"{base}@{','.join(doms)}" if doms else base, domains=doms)


CONDITIONS: Registry[Condition] = Registry("training condition")


def register(cond: Condition) -> Condition:
    """Add a training condition; a name that is already there raises (no silent replacement)."""
    return CONDITIONS.add(cond.name, cond)


register(Condition("dpo", "dpo", "sigmoid DPO, beta 0.1, reference = SFT model (adapter disabled), precomputed"))
register(Condition("dpo_no_ref", "dpo", "DPO with reference log-probs set to zero", reference="zero"))
register(
    Condition(
        "dpo_shuffled", "dpo", "DPO on pairs swapped with p = 0.5 (seeded): no consistent preference", swap_prob=0.5
    )
)
register(Condition("dpo_reversed", "dpo", "DPO on every pair swapped (prefers the worse answer)", swap_prob=1.0))
register(Condition("margin", "margin", "contrastive hinge, margin 1.0 on length-normalised log-probs, no reference"))
register(Condition("margin_kl", "margin", "contrastive hinge + 0.1 · KL to the frozen model", kl_weight=0.1))
register(Condition("sft_chosen", "sft", "SFT on the chosen answers"))
register(Condition("sft_rejected", "sft", "SFT on the rejected answers", sft_target="rejected"))
register(Condition("sft_kl", "sft", "SFT on chosen + 0.1 · KL to the frozen model", kl_weight=0.1))
register(
    Condition(
        "sft_kl_rejected", "sft", "SFT on rejected + 0.1 · KL to the frozen model", sft_target="rejected", kl_weight=0.1
    )
)
register(
    Condition(
        "random_lora",
        "none",
        "untrained LoRA with random non-zero B (‖ΔW‖/‖W‖ = 0.02 per layer)",
        random_delta_rel=0.02,
    )
)
register(
    Condition(
        "random_lora_peft",
        "none",
        "untrained LoRA from PEFT's random init (init_lora_weights=False), not rescaled: the paper's control",
        random_init="peft",
    )
)

PAPER_LORA = LoraSettings()
PAPER_HPARAMS = TrainHParams()


def get_condition(name: str) -> Condition:
    """A registered condition; 'name@d1,d2' restricts it to data domains d1 and d2."""
    base, _, doms = name.partition("@")
    if base not in CONDITIONS:
        raise LabError(f"unknown training condition '{base}' (known: {', '.join(CONDITIONS)})")
    cond = CONDITIONS[base]
    return cond.with_domains(tuple(d for d in doms.split(",") if d)) if doms else cond


def condition_from_dict(data: dict[str, Any]) -> Condition:
    """`{"base": "dpo", "beta": 0.2}` or `{"name": "dpo", "domains": ["code"]}`: a preset with overrides.

    Without `base`, `name` picks the preset; with `base`, `name` (optional) renames the result. A condition with
    neither a known base nor a known name must give `objective` explicitly.
    """
    data = dict(data or {})
    renamed = "base" in data and "name" in data
    base_name = data.pop("base", None) or data.get("name")
    if not base_name:
        raise LabError("a condition needs a 'name' or a 'base'")
    base_name = str(base_name).partition("@")[0]
    merged: dict[str, Any] = to_dict(CONDITIONS[base_name]) if base_name in CONDITIONS else {}
    merged.update(data)
    merged.setdefault("name", base_name)
    cond = from_dict(Condition, merged, "condition")
    if cond.domains and "@" not in cond.name and not renamed:
        cond = cond.with_domains(cond.domains)
    return cond
