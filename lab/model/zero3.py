"""DeepSpeed ZeRO-3 for one model replica: the stage-3 config of an inference replica (bucket sizes from the model
width), the replica's process group, and partitioning a loaded model with its mixture-of-experts blocks as leaves.

What lab/model/sharded.py (the Ray side: one actor per rank) and cluster/zero.py (configs generated from a placement plan)
build on. DeepSpeed is imported only inside the functions that need it.
"""

from __future__ import annotations

import os
from typing import Any


def zero3_buckets(d_model: int, layer_params: int = 0) -> dict[str, int]:
    """Stage-3 bucket sizes from the model width (what transformers' "auto" picks) and one layer's parameters."""
    live = max(10**9, 2 * layer_params)
    return {
        "reduce_bucket_size": d_model * d_model,
        "stage3_prefetch_bucket_size": int(0.9 * d_model * d_model),
        "stage3_param_persistence_threshold": 10 * d_model,
        "stage3_max_live_parameters": live,
        "stage3_max_reuse_distance": live,
    }


def inference_config(d_model: int, dtype: str = "float32", offload: bool = False) -> dict[str, Any]:
    """The ZeRO-3 config of an inference replica (no optimizer; the batch key is required but unused)."""
    zero: dict[str, Any] = {"stage": 3, **zero3_buckets(d_model)}
    if offload:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if dtype == "bfloat16":
        cfg["bf16"] = {"enabled": True}
    elif dtype == "float16":
        cfg["fp16"] = {"enabled": True}
    return cfg


def moe_leaf_classes(model: Any) -> list[type]:
    """The sparse MoE block classes in a model (Qwen3-MoE, Qwen2-MoE, Mixtral, ...), each once."""
    return list({type(m): None for m in model.modules() if type(m).__name__.endswith("SparseMoeBlock")})


def init_distributed(rank: int, world: int, master: str, port: int) -> None:
    """Join the replica's process group (gloo without a GPU; loopback masters keep gloo on `lo`)."""
    import deepspeed
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0", LOCAL_SIZE="1", MASTER_ADDR=master, MASTER_PORT=str(port)
    )
    if master.startswith("127."):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo", auto_mpi_discovery=False)


def shard_model(model: Any, ds_config: dict[str, Any]) -> Any:
    """Partition a loaded model with ZeRO-3 (MoE blocks as leaves); returns the engine (its `.module` is the model)."""
    import deepspeed
    from deepspeed.utils import set_z3_leaf_modules

    leaves = moe_leaf_classes(model)
    if leaves:
        set_z3_leaf_modules(model, leaves)
    trainable = [p for p in model.parameters() if p.requires_grad] if "optimizer" in ds_config else None
    engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=ds_config)
    if trainable is None:
        engine.module.eval()  # inference replica; a training engine keeps the module's mode
    return engine
