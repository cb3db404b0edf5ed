"""GPU placement planner: how many GPUs one model replica needs and how many replicas a cluster holds.

Plain memory arithmetic, unit-tested on CPU. Inference: weights + KV cache for the batch + a fixed overhead must fit
in `headroom` of the GPUs of one replica (spread with `device_map="auto"`); training (LoRA under DeepSpeed ZeRO-3):
the frozen weights are sharded over the workers and each keeps activations and its LoRA optimizer state.

    python -m cluster.placement --model qwen3-235b-a22b --gpu h100-80gb --gpus 16
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from lab.errors import LabError
from lab.models import REGISTRY, ModelSpec

GPU_GIB = {"h100-80gb": 80.0, "h200-141gb": 141.0, "a100-80gb": 80.0, "a100-40gb": 40.0, "l40s-48gb": 48.0,
           "l4-24gb": 24.0}
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# K/V width per layer (n_kv_heads × head_dim) where the registry's d_model would overstate it (GQA models)
KV_DIM = {"gemma-3-27b-it": 16 * 128, "qwen3-235b-a22b": 4 * 128, "smollm2-135m": 3 * 64}
OVERHEAD_GIB = 2.0  # CUDA context, allocator fragmentation, temporaries


@dataclass(frozen=True)
class Placement:
    model: str
    mode: str  # "inference" or "training"
    gpu: str
    gpus_per_replica: int
    replicas: int
    weights_gib: float
    extra_gib: float  # KV cache (inference) or activations + LoRA optimizer state (training), per replica
    per_gpu_gib: float
    strategy: str  # single | device_map | zero3

    def runner_overrides(self) -> dict[str, object]:
        """Config values for a sweep (`--set` keys) that realise this placement."""
        device = "cuda" if self.gpus_per_replica == 1 else "auto"
        return {"model.device": device, "model.dtype": "bfloat16", "runner.num_actors": self.replicas,
                "runner.gpus_per_actor": self.gpus_per_replica, "runner.cpus_per_actor": 4 * self.gpus_per_replica}


def kv_cache_gib(spec: ModelSpec, batch: int, seq_len: int, dtype: str) -> float:
    kv_dim = KV_DIM.get(spec.name, spec.d_model)
    return 2 * spec.n_layers * kv_dim * seq_len * batch * BYTES[dtype] / 2**30


def plan(spec: ModelSpec, gpu: str, total_gpus: int, *, dtype: str = "bfloat16", batch: int = 32,
         seq_len: int = 512, headroom: float = 0.85, training: bool = False, lora_r: int = 64,
         gpus_per_node: int = 8) -> Placement:
    """The smallest GPUs-per-replica (a power of two up to a node, then whole nodes) that fits, and the replicas."""
    if gpu not in GPU_GIB:
        raise LabError(f"unknown GPU '{gpu}' (known: {', '.join(GPU_GIB)})")
    if total_gpus < 1:
        raise LabError("total_gpus must be >= 1")
    cap = GPU_GIB[gpu] * headroom
    weights = spec.n_params_b * 1e9 * BYTES[dtype] / 2**30
    if training:
        lora_params = 2 * lora_r * spec.d_model * 7 * spec.n_layers  # A and B of ~7 linear maps per layer
        extra = lora_params * (BYTES[dtype] + 12) / 2**30 + _activations_gib(spec, batch, seq_len, dtype)
    else:
        extra = kv_cache_gib(spec, batch, seq_len, dtype)
    for n in _candidates(total_gpus, gpus_per_node):
        per_gpu = (weights + extra) / n + OVERHEAD_GIB if not training else \
            weights / n + extra + OVERHEAD_GIB  # ZeRO-3 shards weights; activations stay per worker
        if per_gpu <= cap:
            strategy = "single" if n == 1 else ("zero3" if training else "device_map")
            return Placement(spec.name, "training" if training else "inference", gpu, n, total_gpus // n,
                             round(weights, 1), round(extra, 2), round(per_gpu, 1), strategy)
    raise LabError(f"{spec.name} ({weights:.0f} GiB of weights) does not fit on {total_gpus} × {gpu}")


def _activations_gib(spec: ModelSpec, batch: int, seq_len: int, dtype: str) -> float:
    # with gradient checkpointing: one residual per layer boundary plus one layer's working set (~16 d per token)
    return (spec.n_layers + 16) * spec.d_model * seq_len * batch * BYTES[dtype] / 2**30


def _candidates(total: int, per_node: int) -> list[int]:
    out = [n for n in (1, 2, 4, 8, 16) if n <= min(total, per_node)]
    out += [per_node * k for k in range(2, total // per_node + 1)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="GPU placement for a model replica")
    ap.add_argument("--model", required=True, choices=sorted(REGISTRY))
    ap.add_argument("--gpu", default="h100-80gb", choices=sorted(GPU_GIB))
    ap.add_argument("--gpus", type=int, default=8, help="GPUs in the cluster")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--training", action="store_true", help="LoRA training under ZeRO-3 instead of inference")
    a = ap.parse_args(argv)
    try:
        p = plan(REGISTRY[a.model], a.gpu, a.gpus, batch=a.batch, seq_len=a.seq_len, training=a.training)
    except LabError as e:
        print(f"error: {e}")
        return 2
    for k, v in asdict(p).items():
        print(f"{k:>17}: {v}")
    if not a.training:
        print("overrides: " + " ".join(f"--set {k}={v}" for k, v in p.runner_overrides().items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
