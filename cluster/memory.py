"""The memory terms of a placement (cluster/placement.py), in GiB (2**30 bytes): the GPU sizes, bytes per dtype,
K/V widths, per-GPU overhead and LoRA optimizer state; the formulas `plan` sums (KV cache, LoRA parameters,
activations); and `report`, which writes a plan out term by term, each with its formula, so a reader can redo it by
hand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.model.loading import ModelSpec

if TYPE_CHECKING:
    from cluster.placement import Placement

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
KV_DIM = {"gemma-3-27b-it": 16 * 128, "qwen3-235b-a22b": 4 * 128, "smollm2-135m": 3 * 64}
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


def report(
    p: Placement,
    spec: ModelSpec,
    total_gpus: int,
    batch: int,
    seq_len: int,
    lora_r: int,
    headroom: float = 0.85,
    dtype: str = "bfloat16",
) -> str:
    """The plan as text: every term with its formula, the candidates, the choice and why, the overrides."""
    b, cap = BYTES[dtype], GPU_GIB[p.gpu] * headroom
    out = [
        f"{p.model} {p.mode} on {total_gpus} × {p.gpu}: usable {GPU_GIB[p.gpu]:.0f} GiB × {headroom:.0%} = "
        f"{cap:.2f} GiB per GPU, {OVERHEAD_GIB:.2f} GiB overhead each (GiB = 2^30 B)",
        f"  weights W       = {spec.n_params_b}e9 params × {b} B = {p.weights_gib:.2f} GiB",
        f"  2 gathered layers = 2 × W / {spec.n_layers} layers = {2 * p.layer_gib:.2f} GiB (ZeRO-3 only)",
    ]
    if p.mode == "training":
        lp = lora_params(spec, lora_r)
        out += [
            f"  LoRA state      = 2 × r {lora_r} × d {spec.d_model} × 7 × {spec.n_layers} layers = {lp:,} params "
            f"× {LORA_STATE_BYTES} B = {lp * LORA_STATE_BYTES / GIB:.2f} GiB",
            f"  activations     = ({spec.n_layers} + 16) × d {spec.d_model} × {seq_len} tokens × {batch} "
            f"micro-batch × {b} B = {activations_gib(spec, batch, seq_len, dtype):.2f} GiB per GPU",
        ]
    else:
        out.append(
            f"  KV cache        = 2 × {spec.n_layers} layers × {KV_DIM.get(spec.name, spec.d_model)} KV width × "
            f"{seq_len} tokens × {batch} rows × {b} B = {p.extra_gib:.2f} GiB per replica"
        )
    out.append("  per GPU:")
    out += [f"    {line}" for line in p.lines]
    out.append(
        f"  choice: {p.strategy}{' +offload' if p.offload else ''}, {p.gpus_per_replica} GPU(s) per replica, "
        f"{p.replicas} replica(s): {p.why}"
    )
    if p.mode == "training":
        out.append(
            "  overrides: " + " ".join(f"--set {k}={v}" for k, v in p.training_overrides().items() if k != "deepspeed")
        )
    else:
        out.append("  overrides: " + " ".join(f"--set {k}={v}" for k, v in p.runner_overrides().items()))
    return "\n".join(out)
