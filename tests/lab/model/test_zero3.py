"""DeepSpeed ZeRO-3 on CPU (gloo, world size 2, Ray actors in a placement group): a sharded replica runs the lab's
Runner under injection and generates exactly the unsharded model's tokens; a tiny Qwen3-MoE with its sparse blocks as
ZeRO-3 leaves matches unsharded logits; a ZeRO-3 LoRA DPO step (config generated from a plan) matches the unsharded
step's loss."""

from __future__ import annotations

import pytest

from lab.config import ModelConfig, ShardConfig
from lab.errors import LabError
from lab.generate.runner import Runner, VectorBank
from lab.model.zero3 import inference_config, zero3_buckets
from lab.steer.concepts import DEFAULT_TEMPLATE, concept_vectors
from tests.conftest import trial

pytest.importorskip("deepspeed")


def _trial(concept, layer, strength, kind="injection", n=1):
    return trial(concept=concept, layer=layer, strength=strength, kind=kind, trial_number=n)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from lab.run.parallel import connect

    connect(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random 4-layer Llama with the embedded model's tokenizer and chat template, saved as a local HF dir (the
    whole runner path runs on it; ZeRO-3 gathers per module, so 4 small layers keep the test short on CPU)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lab.model.embedded import ensure_converted

    tok = AutoTokenizer.from_pretrained(ensure_converted())
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # never predict a special token (they decode to nothing): responses are visible text
        model.lm_head.weight[sorted(tok.added_tokens_decoder)] = 0.0
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_sharded_replica_generates_the_unsharded_tokens(tiny_dir, tmp_path, ray_local):
    import ray

    from lab.experiments.concept_injection import SweepContext, generate
    from lab.model import sharded
    from lab.model.loading import load
    from lab.run.parallel import run_shards

    lm = load(ModelConfig(tiny_dir))
    vecs, typical = concept_vectors(lm, ["Dust", "Trumpets"], [1, 2], cache_dir=tmp_path)
    bank = VectorBank(vecs, typical)
    trials = [
        _trial("Dust", 1, 1.0, n=1),
        _trial("Trumpets", 2, 1.0, n=10),
        _trial("Dust", 1, 1.0, "control", n=1),
        _trial("Trumpets", 1, 1.0, "random", n=2),
    ]
    shards = [trials[:2], trials[2:]]
    want = [row for shard in shards for row in Runner(lm, bank, batch_size=2).run(shard)]
    w = sharded.replica(ModelConfig(tiny_dir), ShardConfig("zero3", 2), cpus=1, threads=1, batch_size=2)
    try:
        total = sum(p.numel() for p in lm.model.parameters())
        info = ray.get(w.info.remote())
        assert info["local_numel"] < 0.6 * total  # rank 0 stores about half of the weights
        assert info["partitioned_on_load"]  # from_pretrained ran under zero.Init: no rank held the whole model
        assert ray.get(w.n_layers.remote()) == 4
        svecs, styp = ray.get(
            w.vectors.remote(["Dust", "Trumpets"], [1, 2], DEFAULT_TEMPLATE, "baseline_words", str(tmp_path), "tiny")
        )
        assert svecs.keys() == vecs.keys() and styp == pytest.approx(typical, abs=1e-4)
        assert max((svecs[k].vector - vecs[k].vector).abs().max().item() for k in vecs) <= 1e-4
        # driven exactly as lab.run.parallel drives a one-process replica: two shards in flight, the bank as an object
        stored: dict[str, dict] = {}
        ctx = ray.put(SweepContext(bank, 2))
        run_shards([w], shards, generate, ctx, lambda rows: stored.update((r["trial_id"], r) for r in rows))
        got = [stored[t.trial_id] for t in trials]
    finally:
        sharded.shutdown([w])
    assert [r["response"] for r in got] == [r["response"] for r in want]
    assert [r["new_tokens"] for r in got] == [r["new_tokens"] for r in want] == [8] * 4
    assert got[0]["response"] != got[2]["response"]  # same prompt: the injection changed the tokens


def test_shard_config_and_inference_config():
    assert ShardConfig() == ShardConfig("none", 1, False)
    with pytest.raises(LabError, match="model.shard must be"):
        ShardConfig("zero2")
    with pytest.raises(LabError, match="workers_per_replica"):
        ShardConfig("none", 2)
    with pytest.raises(LabError, match="offload needs"):
        ShardConfig("none", 1, True)
    cfg = inference_config(576, "bfloat16", offload=True)
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["bf16"] == {"enabled": True}
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert zero3_buckets(4096, layer_params=2_500_000_000) == {
        "reduce_bucket_size": 16_777_216,
        "stage3_prefetch_bucket_size": 15_099_494,
        "stage3_param_persistence_threshold": 40_960,
        "stage3_max_live_parameters": 5_000_000_000,
        "stage3_max_reuse_distance": 5_000_000_000,
    }


def _tiny_moe():
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3MoeConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=8,
        num_experts_per_tok=2,
        max_position_embeddings=128,
        decoder_sparse_step=1,
        mlp_only_layers=[],
    )
    return Qwen3MoeForCausalLM(cfg).eval()


def _moe_readout(model, rows):
    """Logits and injected greedy tokens of the given rows (each rank its own row: different experts per rank)."""
    import torch
    import torch.distributed as dist

    from lab.steer.injection import Injection, inject

    model = getattr(model, "module", model)
    if dist.is_initialized():
        rows = rows[dist.get_rank() :: dist.get_world_size()]
    out = []
    dev = next(model.parameters()).device
    for ids in rows:
        x = torch.tensor([ids], device=dev)
        with torch.no_grad():
            logits = model(input_ids=x).logits
            with inject(model, Injection(1, torch.randn(32, generator=torch.Generator().manual_seed(2)), 0.3, 3)):
                gen = model.generate(
                    x, attention_mask=torch.ones_like(x), max_new_tokens=5, do_sample=False, pad_token_id=0
                )
        out.append((logits.cpu(), gen[0, x.shape[1] :].tolist()))
    if dist.is_initialized():
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, out)
        out = [row for part in zip(*everyone) for row in part]
    return out


def test_tiny_qwen3_moe_under_zero3_matches_unsharded(ray_local):
    from lab.model import sharded, zero3

    rows = [[5, 17, 99, 3, 42, 7], [64, 2, 2, 120, 9, 31]]
    want = _moe_readout(_tiny_moe(), rows)
    assert zero3.moe_leaf_classes(_tiny_moe())[0].__name__ == "Qwen3MoeSparseMoeBlock"
    w = sharded.replica(_tiny_moe, ShardConfig("zero3", 2), cpus=1, ds_config=inference_config(32))
    try:
        import ray

        got = ray.get(w.call.remote(_moe_readout, rows))
    finally:
        sharded.shutdown([w])
    for (lg, tg), (lw, tw) in zip(got, want):
        assert (lg - lw).abs().max().item() <= 1e-4
        assert tg == tw and len(tg) == 5


def _tiny_lora():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    m = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    )
    return get_peft_model(
        m, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )


def _dpo_batch():
    import torch

    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 128, (4, 3), generator=g)
    ids = torch.cat(
        [
            torch.cat([prompt, torch.randint(0, 128, (4, 5), generator=g)], 1),
            torch.cat([prompt, torch.randint(0, 128, (4, 5), generator=g)], 1),
        ]
    )  # 4 chosen, 4 rejected rows
    mask = torch.ones_like(ids)
    mask[:, :3] = 0
    return ids, mask


def _dpo_loss(model, ids, mask, beta=0.1):
    """Sigmoid DPO against the same model with its adapter disabled (TRL's reference for ref_model=None + PEFT)."""
    import torch
    import torch.nn.functional as F

    from training.lora.losses import sequence_logps, token_logps

    pol = sequence_logps(token_logps(model(input_ids=ids).logits, ids), mask[:, 1:])[0]
    with torch.no_grad(), model.disable_adapter():
        ref = sequence_logps(token_logps(model(input_ids=ids).logits, ids), mask[:, 1:])[0]
    (pc, pr), (rc, rr) = pol.chunk(2), ref.chunk(2)
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def _zero3_dpo_steps(engine, steps=2):
    """Each rank takes half of the pairs; the reported loss is the mean over ranks (= the full batch's)."""
    import torch.distributed as dist

    ids, mask = (t.to(engine.device) for t in _dpo_batch())
    r, w, p = dist.get_rank(), dist.get_world_size(), ids.shape[0] // 2
    rows = [i for i in range(r, p, w)] + [p + i for i in range(r, p, w)]
    losses = []
    for _ in range(steps):
        loss = _dpo_loss(engine.module, ids[rows], mask[rows])
        engine.backward(loss)
        engine.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        losses.append(total.item() / w)
    return losses


def test_zero3_lora_dpo_step_equals_unsharded(ray_local):
    import ray
    import torch

    from cluster.placement import plan_placement, zero_config
    from cluster.zero import concrete
    from lab.model import sharded
    from lab.model.loading import ModelSpec

    model, (ids, mask) = _tiny_lora(), _dpo_batch()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    want = []
    for _ in range(2):
        loss = _dpo_loss(model, ids, mask)
        loss.backward()
        opt.step()
        opt.zero_grad()
        want.append(loss.item())
    # the ZeRO config is generated from a (tiny) training plan, then made concrete for a bare deepspeed.initialize
    spec = ModelSpec("tiny-llama", "test", 2, 32, 2e-5, (1,))
    p = plan_placement(spec, "l4-24gb", 2, training=True, batch=2, seq_len=8, lora_r=4)
    ds = concrete(zero_config(p, stage=3), micro_batch=2, accumulation=1, world_size=2, bf16=False, lr=1e-2)
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["reduce_bucket_size"] == 32 * 32
    w = sharded.replica(_tiny_lora, ShardConfig("zero3", 2), cpus=1, ds_config=ds)
    try:
        got = ray.get(w.call.remote(_zero3_dpo_steps))
    finally:
        sharded.shutdown([w])
    assert abs(want[0] - 0.6931) > 1e-3  # a random adapter: the first loss is not log 2
    assert got == pytest.approx(want, abs=1e-4)
