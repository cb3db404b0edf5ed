"""GPU placement planner: how one model replica is laid out (one GPU, `device_map`, or DeepSpeed ZeRO-3), how many
GPUs it takes, and how many replicas a cluster holds.

Plain memory arithmetic in GiB (2**30 bytes), printed term by term so a reader can redo it by hand:
- weights W = parameters × bytes per parameter (bf16: 2);
- inference: KV cache = 2 (K and V) × layers × KV width (n_kv_heads × head_dim) × tokens × rows × bytes;
- training (LoRA): adapter params = 2 (A, B) × r × d_model × 7 linear maps × layers, their state = 16 B each (bf16
  weight 2 + bf16 grad 2 + fp32 master 4 + Adam m, v 8); activations with gradient checkpointing =
  (layers + 16) × d_model × tokens × micro-batch × bytes;
- ZeRO-3: each GPU holds 1/n of W (and of the LoRA state) plus the layers it has gathered: 2 layers live (the one
  computing and the one prefetched) = 2 × W / layers;
- every GPU: + 2 GiB overhead (CUDA context, allocator); everything must fit in `headroom` (85 %) of its memory.

The choice (inference): one GPU if the replica fits; else `device_map` over the fewest GPUs of one node (weights stay
resident, no per-layer all-gather); ZeRO-3 only across nodes, where `device_map` (one process) cannot reach.
Training: one GPU, else ZeRO-3 (data-parallel workers; `device_map` would leave all but one GPU idle).
`--offload` allows ZeRO-3 with parameters offloaded to CPU memory as a last resort.
The constants and per-term formulas are in cluster/memory.py; `explain_plan` prints a plan term by term, and
`zero_config` is the DeepSpeed ZeRO config that realises a training plan (cluster/zero.py writes the reference files
from it).

    python -m cluster.placement qwen3-235b-a22b --gpu h100-80gb --gpus 16
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cluster.memory import (
    BYTES,
    GIB,
    GPU_GIB,
    KV_DIM,
    LORA_STATE_BYTES,
    OVERHEAD_GIB,
    activations_gib,
    kv_cache_gib,
    lora_params,
)
from lab.errors import ArgumentParser, LabError, fail, one_line_errors
from lab.model.loading import REGISTRY, ModelSpec
from lab.model.zero3 import zero3_buckets


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
    offload: bool = False
    layer_gib: float = 0.0  # one decoder layer's weights (what ZeRO-3 gathers at a time)
    micro_batch: int = 1
    d_model: int = 0
    why: str = ""
    lines: tuple[str, ...] = ()  # the arithmetic, one candidate per line

    def runner_overrides(self) -> dict[str, object]:
        """Config values for a sweep (`--set` keys) that realise this placement. ZeRO-3: one Ray worker per GPU,
        `model.workers_per_replica` of them per replica (lab.model.sharded.ShardConfig)."""
        if self.strategy == "zero3":
            return {
                "model.dtype": "bfloat16",
                "model.shard": "zero3",
                "model.workers_per_replica": self.gpus_per_replica,
                "model.offload": self.offload,
                "runner.num_actors": self.replicas,
                "runner.gpus_per_actor": 1,
                "runner.cpus_per_actor": 4,
            }
        device = "cuda" if self.gpus_per_replica == 1 else "auto"
        return {
            "model.device": device,
            "model.dtype": "bfloat16",
            "runner.num_actors": self.replicas,
            "runner.gpus_per_actor": self.gpus_per_replica,
            "runner.cpus_per_actor": 4 * self.gpus_per_replica,
        }

    def training_overrides(self) -> dict[str, object]:
        """Ablation config values (`--set` keys of jobs.train_ablations) for a training plan."""
        n = self.gpus_per_replica
        out: dict[str, object] = {"model.dtype": "bfloat16", "hparams.per_device_batch_size": self.micro_batch}
        if n == 1:
            return out | {"resources.workers": 1, "resources.gpus": 1, "deepspeed": None}
        return out | {
            "resources.workers": n,
            "resources.gpus_per_worker": 1,
            "resources.cpus_per_worker": 4,
            "deepspeed": "<python -m cluster.placement ... --training --zero-out FILE>",
        }


def plan_placement(
    spec: ModelSpec,
    gpu: str,
    total_gpus: int,
    *,
    dtype: str = "bfloat16",
    batch: int = 32,
    seq_len: int = 512,
    headroom: float = 0.85,
    training: bool = False,
    lora_r: int = 64,
    gpus_per_node: int = 8,
    offload: bool = False,
) -> Placement:
    """The first layout (in the order of the module docstring) whose per-GPU bytes fit, and its replicas."""
    if gpu not in GPU_GIB:
        raise LabError(f"unknown GPU '{gpu}' (known: {', '.join(GPU_GIB)})")
    if total_gpus < 1 or batch < 1 or seq_len < 1:
        raise LabError("total_gpus, batch and seq_len must be >= 1")
    if dtype not in BYTES:
        raise LabError(f"unknown dtype '{dtype}' (known: {', '.join(BYTES)})")
    cap, o = GPU_GIB[gpu] * headroom, OVERHEAD_GIB
    w = spec.n_params_b * 1e9 * BYTES[dtype] / GIB
    g = 2 * w / spec.n_layers  # two gathered layers under ZeRO-3
    if training:
        lora = lora_params(spec, lora_r) * LORA_STATE_BYTES / GIB
        act = activations_gib(spec, batch, seq_len, dtype)
        extra = lora + act
        cands = [("single", 1, False, w + lora + act + o, f"{w:.2f} + {lora:.2f} + {act:.2f} + {o:.2f}")]
        cands += [
            (
                "zero3",
                n,
                False,
                (w + lora) / n + g + act + o,
                f"({w:.2f} + {lora:.2f}) / {n} + {g:.2f} + {act:.2f} + {o:.2f}",
            )
            for n in _candidates(total_gpus, gpus_per_node)
            if n > 1
        ]
        tail = (
            "zero3",
            total_gpus,
            True,
            lora / total_gpus + g + act + o,
            f"{lora:.2f} / {total_gpus} + {g:.2f} + {act:.2f} + {o:.2f}",
        )
    else:
        extra = kv = kv_cache_gib(spec, batch, seq_len, dtype)
        cands = [("single", 1, False, w + kv + o, f"{w:.2f} + {kv:.2f} + {o:.2f}")]
        for n in _candidates(total_gpus, gpus_per_node):
            if 1 < n <= gpus_per_node:
                cands.append(("device_map", n, False, (w + kv) / n + o, f"({w:.2f} + {kv:.2f}) / {n} + {o:.2f}"))
            elif n > gpus_per_node:
                cands.append(("zero3", n, False, w / n + g + kv + o, f"{w:.2f} / {n} + {g:.2f} + {kv:.2f} + {o:.2f}"))
        tail = ("zero3", total_gpus, True, g + kv + o, f"{g:.2f} + {kv:.2f} + {o:.2f}")
    if offload:
        cands.append(tail)
    lines, chosen = [], None
    for strategy, n, off, per_gpu, formula in cands:
        ok = per_gpu <= cap
        name = strategy + (" +offload" if off else "")
        lines.append(
            f"{name:<17}{n:>3} GPU{'s' if n > 1 else ' '}: {formula} = {per_gpu:.2f} GiB "
            f"{'<=' if ok else '> '} {cap:.2f}{'  <- chosen' if ok and chosen is None else ''}"
        )
        if ok and chosen is None:
            chosen = (strategy, n, off, per_gpu)
    if chosen is None:
        raise LabError(
            f"{spec.name} ({w:.0f} GiB of weights) does not fit on {total_gpus} × {gpu}"
            + ("" if offload else " (try --offload)")
        )
    strategy, n, off, per_gpu = chosen
    return Placement(
        spec.name,
        "training" if training else "inference",
        gpu,
        n,
        total_gpus // n,
        round(w, 2),
        round(extra, 2),
        round(per_gpu, 2),
        strategy,
        off,
        round(g / 2, 3),
        batch if training else 1,
        spec.d_model,
        _why(strategy, n, off, training, gpus_per_node),
        tuple(lines),
    )


def _why(strategy: str, n: int, off: bool, training: bool, per_node: int) -> str:
    if strategy == "single":
        return "the replica fits on one GPU: no communication at all"
    if strategy == "device_map":
        return (
            f"too big for one GPU but fits on {n} GPUs of one node: device_map keeps every weight resident "
            "(no per-layer all-gather); ZeRO-3 would gather each layer over the interconnect for no gain"
        )
    if training:
        why = (
            "too big for one GPU: ZeRO-3 partitions weights and LoRA state over data-parallel workers "
            "(device_map would leave all but one GPU idle)"
        )
    else:
        why = (
            f"does not fit on one node ({per_node} GPUs): device_map is one process and cannot span nodes, "
            "ZeRO-3 partitions the weights over workers on several nodes"
        )
    return why + ("; parameters offloaded to CPU memory (needs ~W of host RAM per node)" if off else "")


def _candidates(total: int, per_node: int) -> list[int]:
    out = [n for n in (1, 2, 4, 8, 16) if n <= min(total, per_node)]
    out += [per_node * k for k in range(2, total // per_node + 1)]
    return out


def explain_plan(
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


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(
        prog="python -m cluster.placement",
        description="GPU placement for a model replica (inference and LoRA training)",
    )
    ap.add_argument("name", nargs="?", choices=sorted(REGISTRY), help="registry model (or --model)")
    ap.add_argument("--model", choices=sorted(REGISTRY))
    ap.add_argument("--gpu", default="h100-80gb", choices=sorted(GPU_GIB))
    ap.add_argument("--gpus", type=int, default=8, help="GPUs in the cluster")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32, help="inference rows per generate()")
    ap.add_argument("--seq-len", type=int, default=512, help="inference tokens per row")
    ap.add_argument("--train-batch", type=int, default=1, help="training micro-batch per GPU")
    ap.add_argument("--train-seq-len", type=int, default=2048)
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--offload", action="store_true", help="allow ZeRO-3 with parameters offloaded to CPU")
    ap.add_argument("--training", action="store_true", help="print only the training plan")
    ap.add_argument("--zero-out", help="write the training plan's generated ZeRO config (JSON) here")
    a = ap.parse_args(argv)
    name = a.name or a.model
    if name is None:
        ap.error("a model name is required")
    spec = REGISTRY[name]
    try:
        if a.zero_out:
            from pathlib import Path

            from lab.run.preflight import writable

            writable(Path(a.zero_out).absolute().parent, "--zero-out folder")
        texts = []
        if not a.training:
            p = plan_placement(
                spec, a.gpu, a.gpus, batch=a.batch, seq_len=a.seq_len, gpus_per_node=a.gpus_per_node, offload=a.offload
            )
            texts.append(explain_plan(p, spec, a.gpus, a.batch, a.seq_len, a.lora_r))
        t = plan_placement(
            spec,
            a.gpu,
            a.gpus,
            batch=a.train_batch,
            seq_len=a.train_seq_len,
            training=True,
            lora_r=a.lora_r,
            gpus_per_node=a.gpus_per_node,
            offload=a.offload,
        )
        texts.append(explain_plan(t, spec, a.gpus, a.train_batch, a.train_seq_len, a.lora_r))
    except LabError as e:
        return fail(e)
    ds = zero_config(t)
    if a.zero_out:
        with open(a.zero_out, "w") as f:
            json.dump(ds, f, indent=2)
            f.write("\n")
    print("\n\n".join(texts))
    print(f"  ZeRO config (cluster.zero.zero_config of the training plan): {json.dumps(ds)}")
    return 0


if __name__ == "__main__":
    with one_line_errors():
        raise SystemExit(main())
