"""DeepSpeed ZeRO configs generated from a placement plan (a pure function: plan in, dict out).

What the plan decides: the stage (3 when the weights are sharded, 2 for a data-parallel plan that fits one GPU),
CPU offload (parameters and optimizer state), the micro-batch, and the bucket sizes, which follow the model width d
(the values transformers' "auto" would pick): reduce bucket d², stage-3 prefetch 0.9·d², parameters under 10·d stay
resident; up to max(1e9, two layers) parameters may be live at once, so a whole MoE layer (a ZeRO-3 leaf) fits.

The two files in cluster/deepspeed/ are outputs of this module (`python -m cluster.zero --write`); a test checks that
they equal what it generates now. Their batch keys are "auto" so the trainer's hyper-parameters fill them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cluster.placement import Placement, plan
from lab.model.loading import REGISTRY
from lab.model.zero3 import zero3_buckets

DIR = Path(__file__).resolve().parent / "deepspeed"
# the plan the committed files are generated from: the OLMo-3.1-32B ablation preset (8 × H100, micro-batch 1, 2048)
REFERENCE = {"spec": "olmo-3.1-32b-sft", "gpu": "h100-80gb", "total_gpus": 8, "batch": 1, "seq_len": 2048}


def zero_config(p: Placement, *, stage: int | None = None, batch: str = "plan") -> dict[str, Any] | None:
    """The ZeRO config realising a training plan (None when the plan is one GPU and no stage is asked for).
    `batch="auto"` leaves the batch keys for the trainer to fill; `"plan"` writes the plan's micro-batch."""
    if stage is None:
        if p.strategy == "single":
            return None
        stage = 3 if p.strategy == "zero3" else 2
    if stage not in (2, 3):
        raise ValueError(f"stage must be 2 or 3, got {stage}")
    d = p.d_model
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": d * d,
    }
    if stage == 3:
        zero |= zero3_buckets(d, layer_params=int(p.layer_gib * 2**30 / 2))
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    else:
        zero |= {"reduce_scatter": True, "allgather_bucket_size": d * d}
    if p.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    micro: int | str = p.micro_batch if batch == "plan" else "auto"
    return {
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "steps_per_print": 1000000,
        "wall_clock_breakdown": False,
    }


def concrete(
    cfg: dict[str, Any], micro_batch: int, accumulation: int, world_size: int, *, bf16: bool, lr: float | None = None
) -> dict[str, Any]:
    """A generated config with its "auto" keys filled, for a bare `deepspeed.initialize` (no HF trainer to fill
    them); `lr` adds a torch AdamW (no compiled DeepSpeed optimizer needed)."""
    out = json.loads(json.dumps(cfg))
    fill = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro_batch * accumulation * world_size,
        "gradient_clipping": 0.0,
    }
    out |= {k: v for k, v in fill.items() if out.get(k) in ("auto", None)}
    out["bf16"] = {"enabled": bf16}
    if lr is not None:
        out["optimizer"] = {"type": "AdamW", "params": {"lr": lr, "weight_decay": 0.0, "torch_adam": True}}
    return out


def reference_files() -> dict[str, dict[str, Any]]:
    """What cluster/deepspeed/zero{2,3}.json hold: configs of the reference plan, batch keys left "auto"."""
    r = dict(REFERENCE)
    p = plan(REGISTRY[r.pop("spec")], r.pop("gpu"), r.pop("total_gpus"), training=True, **r)
    return {f"zero{s}.json": zero_config(p, stage=s, batch="auto") for s in (2, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="regenerate cluster/deepspeed/*.json from the reference plan")
    ap.add_argument("--write", action="store_true", help="write the files (default: print them)")
    a = ap.parse_args(argv)
    for name, cfg in reference_files().items():
        text = json.dumps(cfg, indent=2) + "\n"
        if a.write:
            (DIR / name).write_text(text)
        print(f"{DIR / name}:\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
