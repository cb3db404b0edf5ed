"""DeepSpeed ZeRO configs generated from a placement plan: the committed reference files, and `concrete` for a bare
`deepspeed.initialize`.

`zero_config(plan)` (cluster/placement.py, beside the plan's other realisations) is a pure function, plan in, dict
out. What the plan decides: the stage (3 when the weights are sharded, 2 for a data-parallel plan that fits one GPU),
CPU offload (parameters and optimizer state), the micro-batch, and the bucket sizes, which follow the model width d
(the values transformers' "auto" would pick): reduce bucket d², stage-3 prefetch 0.9·d², parameters under 10·d stay
resident; up to max(1e9, two layers) parameters may be live at once, so a whole MoE layer (a ZeRO-3 leaf) fits.

The two files in cluster/deepspeed/ are outputs of this module (`python -m cluster.zero --write`); a test checks that
they equal what it generates now. Their batch keys are "auto" so the trainer's hyper-parameters fill them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cluster.placement import plan_placement, zero_config
from lab.errors import ArgumentParser, one_line_errors
from lab.model.loading import REGISTRY

DIR = Path(__file__).resolve().parent / "deepspeed"
# the plan the committed files are generated from: the OLMo-3.1-32B ablation preset (8 × H100, micro-batch 1, 2048)
REFERENCE_PLAN = {"spec": "olmo-3.1-32b-sft", "gpu": "h100-80gb", "total_gpus": 8, "batch": 1, "seq_len": 2048}


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
    r = dict(REFERENCE_PLAN)
    p = plan_placement(REGISTRY[r.pop("spec")], r.pop("gpu"), r.pop("total_gpus"), training=True, **r)
    return {f"zero{s}.json": zero_config(p, stage=s, batch="auto") for s in (2, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(
        prog="python -m cluster.zero", description="regenerate cluster/deepspeed/*.json from the reference plan"
    )
    ap.add_argument("--write", action="store_true", help="write the files (default: print them)")
    a = ap.parse_args(argv)
    for name, cfg in reference_files().items():
        text = json.dumps(cfg, indent=2) + "\n"
        if a.write:
            (DIR / name).write_text(text)
        print(f"{DIR / name}:\n{text}")
    return 0


if __name__ == "__main__":
    with one_line_errors():
        raise SystemExit(main())
