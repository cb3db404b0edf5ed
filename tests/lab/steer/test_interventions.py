"""Each operator against a hand computation; sites agree with the block's own arithmetic; hooks always go away."""

from __future__ import annotations

import pytest
import torch

from lab.errors import LabError
from lab.model.loading import decoder_layers
from lab.steer import interventions as iv


def _ids(batch: int = 3, length: int = 7) -> torch.Tensor:
    return torch.arange(batch * length).reshape(batch, length) % 100 + 1


@torch.no_grad()
def _logits(model, ids, ops=()):
    with iv.apply(model, list(ops)):
        return model(ids).logits


def test_empty_list_is_bit_identical(tiny_model):
    ids = _ids()
    assert torch.equal(_logits(tiny_model, ids), _logits(tiny_model, ids, []))


@torch.no_grad()
def test_sites_add_up_to_the_residual_stream(tiny_model):
    """resid_post.L = resid_post.(L-1) + attn_out.L + mlp_out.L, bit for bit (Llama adds in that order)."""
    ids = _ids()
    sites = ["embed", "resid_post.0", "attn_out.1", "mlp_out.1", "resid_post.1", "mlp_in.1"]
    with iv.capture(tiny_model, sites) as a:
        tiny_model(ids)
    assert torch.equal(a["resid_post.1"][0], (a["resid_post.0"][0] + a["attn_out.1"][0]) + a["mlp_out.1"][0])
    block = decoder_layers(tiny_model)[1]
    mid = a["resid_post.0"][0] + a["attn_out.1"][0]
    assert torch.equal(a["mlp_in.1"][0], block.post_attention_layernorm(mid))
    assert torch.equal(a["embed"][0], tiny_model.get_input_embeddings()(ids))


@torch.no_grad()
def test_ablate_removes_exactly_the_component(tiny_model):
    ids, d = _ids(), tiny_model.config.hidden_size
    r = torch.randn(d, generator=torch.Generator().manual_seed(3))
    with iv.capture(tiny_model, ["mlp_out.2"]) as plain:
        tiny_model(ids)
    with iv.apply(tiny_model, [iv.Ablate("mlp_out.2", r, weight=0.5)]), iv.capture(tiny_model, ["mlp_out.2"]) as ab:
        tiny_model(ids)
    h, u = plain["mlp_out.2"][0], r / r.norm()
    want = h - 0.5 * (h @ u)[..., None] * u
    torch.testing.assert_close(ab["mlp_out.2"][0], want, rtol=0, atol=1e-6)
    with iv.apply(tiny_model, [iv.Ablate("resid_post.1", r)]), iv.capture(tiny_model, ["resid_post.1"]) as full:
        tiny_model(ids)
    assert float((full["resid_post.1"][0] @ u).abs().max()) < 1e-5


@torch.no_grad()
def test_patch_with_own_activations_is_bit_identical_and_knocks_in_others(tiny_model):
    ids = _ids()
    base = _logits(tiny_model, ids)
    with iv.capture(tiny_model, ["attn_out.1"]) as own:
        tiny_model(ids)
    assert torch.equal(_logits(tiny_model, ids, [iv.Patch("attn_out.1", own["attn_out.1"][0])]), base)
    other = _ids() + 5
    with iv.capture(tiny_model, ["resid_post.3"]) as oth:
        tiny_model(other)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[:, -1] = True  # last position only
    with (
        iv.apply(tiny_model, [iv.Patch("resid_post.3", oth["resid_post.3"][0], mask)]),
        iv.capture(tiny_model, ["resid_post.3"]) as got,
    ):
        tiny_model(ids)
    h = got["resid_post.3"][0]
    assert torch.equal(h[:, -1], oth["resid_post.3"][0][:, -1])
    assert torch.equal(h[:, :-1], own_resid(tiny_model, ids)[:, :-1])


@torch.no_grad()
def own_resid(model, ids):
    with iv.capture(model, ["resid_post.3"]) as a:
        model(ids)
    return a["resid_post.3"][0]


class _Relu:
    def __init__(self, d: int, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.w_enc, self._w_dec = torch.randn(d, n, generator=g), torch.randn(n, d, generator=g) * 0.1

    def encode(self, x):
        return torch.relu(x @ self.w_enc)

    @property
    def w_dec(self):
        return self._w_dec


@torch.no_grad()
def test_edit_features_hand_computation_and_identities(tiny_model):
    ids, d = _ids(), tiny_model.config.hidden_size
    sae = _Relu(d, 16)
    base = _logits(tiny_model, ids)
    assert torch.equal(_logits(tiny_model, ids, [iv.EditFeatures("mlp_out.1", sae, [])]), base)
    with iv.capture(tiny_model, ["mlp_in.1", "mlp_out.1"]) as a:
        tiny_model(ids)
    f = sae.encode(a["mlp_in.1"][0])
    feats = [2, 5, 11]
    own = iv.EditFeatures("mlp_out.1", sae, feats, values=f[..., feats])  # clamp to their own values
    torch.testing.assert_close(_logits(tiny_model, ids, [own]), base, rtol=0, atol=1e-5)
    with (
        iv.apply(tiny_model, [iv.EditFeatures("mlp_out.1", sae, feats, values=0.0)]),
        iv.capture(tiny_model, ["mlp_out.1"]) as b,
    ):
        tiny_model(ids)
    want = a["mlp_out.1"][0] - f[..., feats] @ sae.w_dec[feats]
    torch.testing.assert_close(b["mlp_out.1"][0], want, rtol=0, atol=1e-6)


def test_bad_sites_and_cleanup(tiny_model):
    with pytest.raises(LabError, match="unknown site 'resid.3'"):
        iv.Site.parse("resid.3")
    with pytest.raises(LabError, match="out of range"):
        with iv.apply(tiny_model, [iv.Ablate("mlp_out.9", torch.ones(32))]):
            pass
    blocks = decoder_layers(tiny_model)
    before = [len(b.mlp._forward_hooks) + len(b.mlp._forward_pre_hooks) for b in blocks]
    with pytest.raises(RuntimeError, match="boom"):
        with (
            iv.apply(tiny_model, [iv.EditFeatures("mlp_out.0", _Relu(32, 4), [1])]),
            iv.capture(tiny_model, ["mlp_in.2"]),
        ):
            raise RuntimeError("boom")
    assert [len(b.mlp._forward_hooks) + len(b.mlp._forward_pre_hooks) for b in blocks] == before


@torch.no_grad()
def test_capture_stop_skips_the_rest(tiny_model):
    calls = []
    h = decoder_layers(tiny_model)[3].register_forward_hook(lambda *a: calls.append(1))
    try:
        with iv.capture(tiny_model, ["mlp_in.1", "resid_post.1"], stop=True) as a:
            tiny_model(_ids())
    finally:
        h.remove()
    assert calls == [] and len(a["mlp_in.1"]) == 1 and len(a["resid_post.1"]) == 1
