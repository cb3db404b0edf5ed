"""The architecture matrix, part 5: DeepSpeed ZeRO-3 (lab/model/zero3.py, lab/model/sharded.py) on every architecture
class — a replica of 2 ranks (Ray actors, gloo on CPU) partitions the tiny model (no rank holds it whole; MoE blocks
as ZeRO-3 leaves) and gives the unsharded model's logits and greedy tokens, under a lab injection (`Add` at
`resid_post`) as well. Reference: the same seed's unsharded HF model in this process, plain `generate`.

One replica serves every architecture, since starting one costs more than the checks: it is started as a job starts
one (`model.shard: zero3`) on a saved checkpoint of the paper's main model class, Gemma3ForConditionalGeneration,
partitioned while loading (`from_pretrained` under zero.Init); on its ranks each other architecture is built whole and
partitioned by `deepspeed.initialize`. 3 new tokens: a ZeRO-3 token step costs ~1 s here."""

from __future__ import annotations

import pytest
import torch

from lab.config import ShardConfig
from lab.steer import interventions as iv
from tests.architectures import ARCHS, HIDDEN, loaded, model, tokenizer

pytest.importorskip("deepspeed")

ROWS = [[5, 17, 40, 3, 42, 7, 11, 60, 12, 9, 30, 31], [0, 0, 64, 2, 2, 20, 9, 31, 33, 35, 50, 51]]  # > window


def _vocab(arch: str) -> int:
    return len(tokenizer(arch)) + 3


def _readout(m, arch: str):
    """Logits of both rows, greedy tokens plain and under an injection, on `m` (sharded or not)."""
    ids = torch.tensor(ROWS)
    mask = (ids != 0).long()
    v = 4.0 * torch.randn(HIDDEN, generator=torch.Generator().manual_seed(1))
    kw = dict(attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=0)
    if any(hasattr(p, "ds_id") for p in m.parameters()):
        kw["synced_gpus"] = True
    with torch.no_grad():
        logits = m(input_ids=ids, attention_mask=mask).logits
        plain = m.generate(ids, **kw)[:, ids.shape[1] :]
        with iv.apply(m, [iv.Add("resid_post.1", v.expand(2, -1), 1.0, torch.tensor([4, 6]))]):
            steered = m.generate(ids, **kw)[:, ids.shape[1] :]
    return logits, plain, steered


def _sharded(lm, arch: str):
    """On every rank of the replica: the loaded checkpoint (gemma3-mm), or `arch` built whole (same seed) and
    partitioned with ZeRO-3; its partition sizes and readout."""
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from lab.model.zero3 import inference_config, shard_model

    alive = None
    if arch == "gemma3-mm":
        m = lm.model
    else:  # with the replica's ZeRO-3 config alive, HF would build a model under zero.Init: build it whole first
        unset_hf_deepspeed_config()
        built = model(arch, _vocab(arch))
        cfg = inference_config(HIDDEN)
        alive = HfDeepSpeedConfig(cfg)  # ZeRO-3 on again for generate (synced steps), as on a replica
        m = shard_model(built, cfg).module
    params = list(m.parameters())
    info = {
        "partitioned": all(hasattr(p, "ds_id") for p in params),
        "local": sum(p.ds_tensor.numel() for p in params),
        "total": sum(p.ds_numel for p in params),
    }
    out = info, _readout(m, arch)
    del alive
    return out


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    import ray

    from lab.config import ModelConfig
    from lab.model import sharded
    from lab.run.parallel import connect

    path = tmp_path_factory.mktemp("tiny-gemma3-mm")
    lm = loaded("gemma3-mm")
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    connect(num_cpus=2)
    w = sharded.replica(ModelConfig(str(path)), ShardConfig("zero3", 2), cpus=1, threads=1, batch_size=2)
    try:
        assert ray.get(w.info.remote())["partitioned_on_load"]
        yield w
    finally:
        sharded.shutdown([w])
        ray.shutdown()


@pytest.mark.parametrize("arch", ARCHS)
def test_zero3_partitions_and_generates_like_the_unsharded_model(replica, arch):
    import ray

    want = _readout(model(arch, _vocab(arch)), arch)
    info, got = ray.get(replica.call.remote(_sharded, arch))
    assert info["partitioned"] and info["local"] < 0.6 * info["total"]  # rank 0 holds about half
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-4)
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    assert got[1].shape == (2, 3) and not torch.equal(want[1], want[2])  # the injection changed the tokens
