"""The memory terms of a placement (cluster/placement.py), in GiB (2**30 bytes): the GPU sizes, bytes per dtype,
K/V widths, per-GPU overhead and LoRA optimizer state, and the formulas `plan_placement` sums (KV cache, LoRA
parameters, activations). Plain numbers in, numbers out: the plan and its printout are cluster/placement.py's.
"""

from __future__ import annotations

from lab.model.loading import ModelSpec

GPU_GIB = {
    "h100-80gb": 80.0,
    "h200-141gb": 141.0,
    "a100-80gb": 80.0,
    "a100-40gb": 40.0,
    "l40s-48gb": 48.0,
    "l4-24gb": 24.0,
}
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# K/V width per layer (n_kv_heads × head_dim) where the registry's d_model would overstate it (GQA models)
KV_DIM = {"gemma-3-27b-it": 16 * 128, "gemma3-270m": 1 * 256, "qwen3-235b-a22b": 4 * 128, "smollm2-135m": 3 * 64}
OVERHEAD_GIB = 2.0  # CUDA context, allocator fragmentation, temporaries
LORA_STATE_BYTES = 16  # per adapter parameter: bf16 weight 2 + bf16 grad 2 + fp32 master 4 + Adam m, v 8
GIB = 2**30


def kv_cache_gib(spec: ModelSpec, batch: int, seq_len: int, dtype: str) -> float:
    kv_dim = KV_DIM.get(spec.name, spec.d_model)
    return 2 * spec.n_layers * kv_dim * seq_len * batch * BYTES[dtype] / GIB


def lora_params(spec: ModelSpec, r: int) -> int:
    return 2 * r * spec.d_model * 7 * spec.n_layers  # A and B of ~7 linear maps per layer


def activations_gib(spec: ModelSpec, batch: int, seq_len: int, dtype: str) -> float:
    # with gradient checkpointing: one residual per layer boundary plus one layer's working set (~16 d per token)
    return (spec.n_layers + 16) * spec.d_model * seq_len * batch * BYTES[dtype] / GIB
