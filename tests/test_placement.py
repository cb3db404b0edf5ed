"""GPU placement arithmetic (CPU-only): the numbers a cluster run depends on."""
from __future__ import annotations

import pytest

from cluster.placement import kv_cache_gib, main, plan
from lab.errors import LabError
from lab.models import REGISTRY


def test_small_models_take_one_gpu_each():
    p = plan(REGISTRY["smollm2-135m"], "h100-80gb", 8)
    assert (p.gpus_per_replica, p.replicas, p.strategy) == (1, 8, "single")
    assert p.runner_overrides()["model.device"] == "cuda"


def test_qwen3_235b_is_one_actor_spanning_a_node():
    p = plan(REGISTRY["qwen3-235b-a22b"], "h100-80gb", 16)
    assert p.weights_gib == pytest.approx(235.1e9 * 2 / 2**30, abs=0.1)  # ≈ 438 GiB of bf16 weights
    assert (p.gpus_per_replica, p.replicas, p.strategy) == (8, 2, "device_map")
    assert p.per_gpu_gib <= 80 * 0.85
    o = p.runner_overrides()
    assert o["model.device"] == "auto" and o["runner.gpus_per_actor"] == 8 and o["runner.num_actors"] == 2
    assert plan(REGISTRY["qwen3-235b-a22b"], "h200-141gb", 8).gpus_per_replica == 4


def test_kv_cache_uses_gqa_width():
    spec = REGISTRY["qwen3-235b-a22b"]
    assert kv_cache_gib(spec, batch=1, seq_len=1024, dtype="bfloat16") == pytest.approx(
        2 * 94 * 512 * 1024 * 2 / 2**30)


def test_training_shards_weights_with_zero3():
    p = plan(REGISTRY["olmo-3.1-32b-sft"], "h100-80gb", 8, training=True, batch=1, seq_len=4096)
    assert p.strategy == "zero3" and p.gpus_per_replica == 2 and p.per_gpu_gib <= 68


def test_errors_are_one_line(capsys):
    with pytest.raises(LabError, match="does not fit on 4 × h100-80gb"):
        plan(REGISTRY["qwen3-235b-a22b"], "h100-80gb", 4)
    with pytest.raises(LabError, match="unknown GPU 'tpu'"):
        plan(REGISTRY["smollm2-135m"], "tpu", 1)
    assert main(["--model", "qwen3-235b-a22b", "--gpus", "4"]) == 2
    assert main(["--model", "gemma-3-27b-it", "--gpus", "8"]) == 0
    assert "--set runner.gpus_per_actor=1" in capsys.readouterr().out
