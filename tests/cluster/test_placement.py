"""GPU placement arithmetic (CPU-only), checked against numbers worked out by hand for every registry model, and the
ZeRO configs generated from a plan (the committed JSON files are outputs of the generator)."""

from __future__ import annotations

import json

import pytest

from cluster.memory import kv_cache_gib
from cluster.placement import main, plan_placement, zero_config
from cluster.zero import DIR, reference_files
from lab.errors import LabError
from lab.model.loading import REGISTRY

GIB = 2**30
# by hand, bf16 (2 B), H100 80 GB × 0.85 = 68 GiB usable, 2 GiB overhead per GPU; inference batch 32 × 512 tokens:
#   W = params × 2 / 2^30; KV = 2 × layers × kv width × 512 × 32 × 2 / 2^30
#   smollm2:  0.135e9 → W 0.2515;  KV 2·30·192·512·32·2 = 0.3516;   single 0.2515 + 0.3516 + 2 = 2.60
#   gemma3-270m: 0.268e9 → W 0.4992; KV 2·18·256·512·32·2 = 0.2813; single 0.4992 + 0.2813 + 2 = 2.78
#   gemma:    27.4e9  → W 51.0365; KV 2·62·2048·…      = 7.75;     single 60.79 ≤ 68
#   olmo:     32.2e9  → W 59.9766; KV 2·64·5120·…      = 20.0;     single 81.98 > 68; device_map 2: 80.0/2 + 2 = 41.99
#   qwen3:    235.1e9 → W 437.9117; KV 2·94·512·…      = 2.9375;   device_map 8: 440.85/8 + 2 = 57.11 (4: 112.21)
INFERENCE = {
    "smollm2-135m": (0.2515, 0.3516, "single", 1, 8, 2.60),
    "gemma3-270m": (0.4992, 0.2813, "single", 1, 8, 2.78),
    "gemma-3-27b-it": (51.0365, 7.75, "single", 1, 8, 60.79),
    "olmo-3.1-32b-base": (59.9766, 20.0, "device_map", 2, 4, 41.99),
    "olmo-3.1-32b-sft": (59.9766, 20.0, "device_map", 2, 4, 41.99),
    "olmo-3.1-32b-dpo": (59.9766, 20.0, "device_map", 2, 4, 41.99),
    "olmo-3.1-32b-instruct": (59.9766, 20.0, "device_map", 2, 4, 41.99),
    "qwen3-235b-a22b": (437.9117, 2.9375, "device_map", 8, 1, 57.11),
}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_inference_plan_matches_hand_arithmetic(name):
    w, kv, strategy, n, replicas, per_gpu = INFERENCE[name]
    p = plan_placement(REGISTRY[name], "h100-80gb", 8)
    assert p.weights_gib == pytest.approx(w, abs=0.005) and p.extra_gib == pytest.approx(kv, abs=0.005)
    assert (p.strategy, p.gpus_per_replica, p.replicas) == (strategy, n, replicas)
    assert p.per_gpu_gib == pytest.approx(per_gpu, abs=0.01) and p.per_gpu_gib <= 68
    assert "<- chosen" in p.lines[[i for i, line in enumerate(p.lines) if "chosen" in line][0]]


def test_qwen3_235b_plan_on_16_h100():
    p = plan_placement(REGISTRY["qwen3-235b-a22b"], "h100-80gb", 16)
    assert (p.gpus_per_replica, p.replicas, p.strategy) == (8, 2, "device_map")
    # ZeRO-3 over both nodes is printed too: 437.91 / 16 + 2 gathered layers (2 × 437.91 / 94 = 9.32) + 2.94 + 2
    assert p.lines[-1].startswith("zero3") and "= 41.62 GiB" in p.lines[-1]
    o = p.runner_overrides()
    assert o["model.device"] == "auto" and o["runner.gpus_per_actor"] == 8 and o["runner.num_actors"] == 2
    # H200: 440.85/4 + 2 = 112.2 ≤ 119.85
    assert plan_placement(REGISTRY["qwen3-235b-a22b"], "h200-141gb", 8).gpus_per_replica == 4
    # nodes of 4 GPUs: one node (112.21 GiB per GPU) is too small, two (8 GPUs: 437.91/8 + 9.32 + 2.94 + 2 = 68.99)
    # too: ZeRO-3 over three nodes, one worker per GPU
    z = plan_placement(REGISTRY["qwen3-235b-a22b"], "h100-80gb", 16, gpus_per_node=4)
    assert (z.strategy, z.gpus_per_replica, z.replicas) == ("zero3", 12, 1)
    assert z.per_gpu_gib == pytest.approx(437.9117 / 12 + 9.3173 + 2.9375 + 2, abs=0.01)
    assert z.runner_overrides() == {
        "model.dtype": "bfloat16",
        "model.shard": "zero3",
        "model.workers_per_replica": 12,
        "model.offload": False,
        "runner.num_actors": 1,
        "runner.gpus_per_actor": 1,
        "runner.cpus_per_actor": 4,
    }


def test_training_plans_by_hand():
    # LoRA state = 2·64·d·7·L params × 16 B; activations = (L + 16)·d·2048·1·2 B; 2 gathered layers = 2 W / L
    olmo = plan_placement(REGISTRY["olmo-3.1-32b-sft"], "h100-80gb", 8, training=True, batch=1, seq_len=2048)
    assert olmo.strategy == "single" and olmo.per_gpu_gib == pytest.approx(59.9766 + 4.375 + 1.5625 + 2, abs=0.01)
    long = plan_placement(REGISTRY["olmo-3.1-32b-sft"], "h100-80gb", 8, training=True, batch=1, seq_len=4096)
    assert (long.strategy, long.gpus_per_replica) == ("zero3", 2)  # single: 59.98 + 4.38 + 3.13 + 2 = 69.48 > 68
    assert long.per_gpu_gib == pytest.approx((59.9766 + 4.375) / 2 + 1.8743 + 3.125 + 2, abs=0.01)
    q = plan_placement(REGISTRY["qwen3-235b-a22b"], "h100-80gb", 16, training=True, batch=1, seq_len=2048)
    assert (q.strategy, q.gpus_per_replica, q.replicas) == ("zero3", 16, 1)  # 8 GPUs: 68.42 > 68
    assert q.per_gpu_gib == pytest.approx((437.9117 + 5.1406) / 16 + 9.3173 + 1.7188 + 2, abs=0.01)
    assert q.training_overrides()["resources.workers"] == 16


def test_offload_is_a_last_resort_and_errors_are_one_line():
    with pytest.raises(LabError, match=r"does not fit on 4 × h100-80gb \(try --offload\)"):
        plan_placement(REGISTRY["qwen3-235b-a22b"], "h100-80gb", 4)
    p = plan_placement(REGISTRY["qwen3-235b-a22b"], "h100-80gb", 4, offload=True)
    assert (p.strategy, p.offload, p.gpus_per_replica) == ("zero3", True, 4)
    assert p.per_gpu_gib == pytest.approx(9.3173 + 2.9375 + 2, abs=0.01)
    with pytest.raises(LabError, match="unknown GPU 'tpu'"):
        plan_placement(REGISTRY["smollm2-135m"], "tpu", 1)


def test_kv_cache_uses_gqa_width():
    assert kv_cache_gib(REGISTRY["qwen3-235b-a22b"], batch=1, seq_len=1024, dtype="bfloat16") == pytest.approx(
        2 * 94 * 512 * 1024 * 2 / GIB
    )


def test_cli_prints_the_plan_and_its_overrides(capsys, tmp_path):
    assert main(["qwen3-235b-a22b", "--gpu", "h100-80gb", "--gpus", "16", "--zero-out", str(tmp_path / "z.json")]) == 0
    out = capsys.readouterr().out
    assert "weights W       = 235.1e9 params × 2 B = 437.91 GiB" in out
    assert "(437.91 + 2.94) / 8 + 2.00 = 57.11 GiB <= 68.00  <- chosen" in out
    assert "--set model.device=auto --set model.dtype=bfloat16 --set runner.num_actors=2" in out
    assert "--set resources.workers=16" in out
    assert json.loads((tmp_path / "z.json").read_text())["zero_optimization"]["stage"] == 3
    assert main(["--model", "qwen3-235b-a22b", "--gpus", "4"]) == 2
    assert capsys.readouterr().err.startswith("error: qwen3-235b-a22b (438 GiB of weights) does not fit")  # 1 line
    assert main(["--model", "gemma-3-27b-it", "--gpus", "8"]) == 0
    assert "--set runner.gpus_per_actor=1" in capsys.readouterr().out


def test_zero_config_is_generated_from_the_plan():
    q = plan_placement(REGISTRY["qwen3-235b-a22b"], "h100-80gb", 16, training=True, batch=1, seq_len=2048)
    z = zero_config(q)["zero_optimization"]
    assert z["stage"] == 3 and z["reduce_bucket_size"] == 4096**2 and z["stage3_param_persistence_threshold"] == 40960
    assert z["stage3_max_live_parameters"] == 2 * int(q.layer_gib * GIB / 2)  # two MoE layers (~2.5e9 params each)
    assert zero_config(q)["train_micro_batch_size_per_gpu"] == 1 and "offload_param" not in z
    off = zero_config(
        plan_placement(REGISTRY["qwen3-235b-a22b"], "h100-80gb", 4, training=True, batch=1, seq_len=2048, offload=True)
    )["zero_optimization"]
    assert off["offload_param"]["device"] == "cpu" and off["offload_optimizer"]["device"] == "cpu"
    one_gpu = plan_placement(REGISTRY["smollm2-135m"], "h100-80gb", 8, training=True)
    assert zero_config(one_gpu) is None  # one GPU: no ZeRO
    for name, cfg in reference_files().items():  # the committed files are this generator's output
        assert json.loads((DIR / name).read_text()) == cfg, f"regenerate with python -m cluster.zero --write ({name})"
