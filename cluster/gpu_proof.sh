#!/usr/bin/env bash
# GPU proof of the sharded path (not run yet: no GPU machine was lent to the session that wrote it).
# On a machine with >= 1 NVIDIA GPU and the project's venv (CUDA torch 2.13.0, `pip install -e .[test]`):
#   bash cluster/gpu_proof.sh [OUT_DIR]        # ≈ 5 min on one H100/H200; writes OUT_DIR/gpu_proof.{json,md}
# It records: the GPUs, the planner's plan for every registry model on this GPU, a small injected sweep on the
# embedded model (bf16) unsharded on one GPU vs a ZeRO-3 replica over all visible GPUs (NCCL; one GPU = world size
# 1, which still runs the partitioned path), token identity between the two, tokens/s, peak GPU memory, and two
# ZeRO-3 LoRA DPO steps on GPU checked against the same steps unsharded. Paste OUT_DIR/gpu_proof.md into
# docs/cluster.md ("What has and has not run on GPUs").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-results/gpu-proof}}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled DS_BUILD_OPS=0
export TORCH_EXTENSIONS_DIR=$PWD/.cache/torch_extensions MLFLOW_DISABLE_TELEMETRY=true RAY_USAGE_STATS_ENABLED=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
GPU_KIND=${GPU_KIND:-h100-80gb}
for m in smollm2-135m gemma-3-27b-it olmo-3.1-32b-sft qwen3-235b-a22b; do
  $PY -m cluster.placement "$m" --gpu "$GPU_KIND" --gpus 16 >> "$OUT/placement.txt" || true
done
timeout 480 $PY - "$OUT" <<'EOF'
import json, sys, time
from pathlib import Path

import ray
import torch

from lab.model import sharded
from lab.steer.concepts import concept_vectors
from lab.config import ModelConfig, ShardConfig
from lab.experiments.concept_injection import SweepContext, generate
from lab.model.loading import load
from lab.run.parallel import connect
from lab.generate.runner import Runner, VectorBank
from lab.protocol.trials import make_trial
from tests.test_zero3 import _dpo_batch, _dpo_loss, _tiny_lora, _zero3_dpo_steps
from cluster.zero import concrete

out, n_gpu = Path(sys.argv[1]), torch.cuda.device_count()
rec = {"gpus": [torch.cuda.get_device_name(i) for i in range(n_gpu)], "torch": torch.__version__}
cfg = ModelConfig("smollm2-135m", dtype="bfloat16", device="cuda")
lm = load(cfg)
vecs, typical = concept_vectors(lm, ["Dust", "Trumpets"], [10, 14], cache_dir=str(out / "vectors"))
bank = VectorBank(vecs, typical)
trials = [make_trial(model="smollm2-135m", concept=c, layer=l, strength=s, strength_mode="relative", kind=k,
                     trial_number=n, sample=0, forced=False, prompt_variant="original", dialogue_format="standard",
                     seed=0, max_new_tokens=32, temperature=0.0)
          for n in range(1, 5) for c in ("Dust", "Trumpets") for l in (10, 14)
          for s, k in ((0.3, "injection"), (0.3, "control"))]
torch.cuda.reset_peak_memory_stats()
t = time.time(); want = Runner(lm, bank, batch_size=16).run(trials); dt = time.time() - t
rec["unsharded"] = {"seconds": dt, "new_tokens": sum(r["new_tokens"] for r in want),
                    "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
del lm; torch.cuda.empty_cache()
connect()
t = time.time()
w = sharded.replica(cfg, ShardConfig("zero3", n_gpu), cpus=1, gpus=1, threads=4, batch_size=16)
rec["zero3_start_seconds"] = time.time() - t
# the work a sweep sends to every replica (lab.run.parallel.run_shards), here one shard of all the trials
t = time.time(); got = ray.get(w.call.remote(generate, trials, SweepContext(bank, 16))); dt = time.time() - t
rec["zero3"] = {"workers": n_gpu, "seconds": dt, "new_tokens": sum(r["new_tokens"] for r in got),
                "peak_gib_rank0": ray.get(w.call.remote(lambda _lm: torch.cuda.max_memory_allocated() / 2**30))}
rec["zero3_tokens_equal"] = [r["response"] for r in got] == [r["response"] for r in want]
rec["zero3_rows_equal"] = sum(a["response"] == b["response"] for a, b in zip(got, want))
sharded.shutdown([w])
# two LoRA DPO steps: unsharded on GPU vs ZeRO-3 (fp32 on both, so equal within 1e-4)
model = _tiny_lora().cuda(); ids, mask = (x.cuda() for x in _dpo_batch())
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
want_l = []
for _ in range(2):
    loss = _dpo_loss(model, ids, mask); loss.backward(); opt.step(); opt.zero_grad(); want_l.append(loss.item())
from cluster.placement import plan_placement
from cluster.zero import zero_config
from lab.model.loading import ModelSpec
p = plan_placement(ModelSpec("tiny-llama", "test", 2, 32, 2e-5, (1,)), "l4-24gb", 2, training=True, batch=2, seq_len=8, lora_r=4)
ds = concrete(zero_config(p, stage=3), micro_batch=max(4 // n_gpu, 1), accumulation=1, world_size=n_gpu,
              bf16=False, lr=1e-2)
if 4 % n_gpu == 0:
    w = sharded.replica(_tiny_lora, ShardConfig("zero3", n_gpu), cpus=1, gpus=1, ds_config=ds)
    t = time.time(); got_l = ray.get(w.call.remote(_zero3_dpo_steps)); dt = time.time() - t
    sharded.shutdown([w])
    rec["dpo"] = {"unsharded": want_l, "zero3": got_l, "max_diff": max(abs(a - b) for a, b in zip(got_l, want_l)),
                  "seconds_2_steps": dt}
(out / "gpu_proof.json").write_text(json.dumps(rec, indent=2))
u, z = rec["unsharded"], rec["zero3"]
md = [f"GPU proof ({', '.join(rec['gpus'])}, torch {rec['torch']}): smollm2-135m bf16, "
      f"{len(trials)} trials × 32 tokens:",
      f"- unsharded 1 GPU: {u['new_tokens'] / u['seconds']:.0f} tok/s, peak {u['peak_gib']:.2f} GiB",
      f"- ZeRO-3 × {z['workers']}: {z['new_tokens'] / z['seconds']:.0f} tok/s, "
      f"peak rank 0 {z['peak_gib_rank0']:.2f} GiB, "
      f"start {rec['zero3_start_seconds']:.0f} s; responses equal: {rec['zero3_rows_equal']}/{len(trials)}"]
if "dpo" in rec:
    d = rec["dpo"]
    md.append(f"- ZeRO-3 LoRA DPO, 2 steps: max |loss diff| {d['max_diff']:.2e} ({d['seconds_2_steps']:.1f} s)")
(out / "gpu_proof.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
