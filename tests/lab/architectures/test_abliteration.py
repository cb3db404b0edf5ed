"""The architecture matrix, part 3: abliteration (lab/experiments/refusal.py) on every architecture class.

Where weight orthogonalisation is valid (Llama, Qwen3-MoE: the projections write straight into the residual; the
MoE's experts are orthogonalised one by one) the orthogonalised model's logits equal the direction-ablation hooks'.
Where it is not (Gemma 3, OLMo 3: a norm after each sublayer) `orthogonalize` refuses in one line and leaves the
model untouched, and the hooks — `attn_out`/`mlp_out` being the post-norm outputs — still remove the direction
exactly. Reference: the residual stream itself, HF's `output_hidden_states`, whose component along r̂ must vanish."""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch

from lab.errors import LabError
from lab.experiments import refusal
from lab.steer import interventions as iv
from tests.architectures import ARCHS, HIDDEN, loaded
from tests.lab.architectures import hf_reference as ref

VALID = ("llama", "qwen3-moe")


@cache
def _lm(arch: str):
    return loaded(arch)


def _ids(lm) -> torch.Tensor:
    text = "Trial 1 : Do you detect an injected thought ? If so , what is it about ? Yes I am"
    return torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]])


@torch.no_grad()
def _run(model, ids, ops=()):
    with iv.apply(model, list(ops)):
        return model(input_ids=ids, output_hidden_states=True)


@pytest.mark.parametrize("arch", VALID)
def test_orthogonalised_weights_equal_the_hooks(arch):
    lm = _lm(arch)
    n, ids = lm.n_layers, _ids(lm)
    dirs = torch.randn(n, HIDDEN, generator=torch.Generator().manual_seed(4))
    weights = torch.linspace(0.5, 1.0, n)
    hooked = _run(lm.model, ids, refusal.ablation_edits(dirs, n, weights)).logits
    orth = refusal.orthogonalize(copy.deepcopy(lm.model), dirs, weights)
    torch.testing.assert_close(_run(orth, ids).logits, hooked, rtol=0, atol=2e-5)
    assert float((hooked - _run(lm.model, ids).logits).abs().max()) > 1e-3
    full = refusal.orthogonalize(copy.deepcopy(lm.model), dirs)
    proj = refusal.residual_projection(full, dirs)
    assert max(proj.values()) <= 1e-5 and len(proj) == 1 + 2 * n
    assert min(refusal.residual_projection(lm.model, dirs).values()) > 1e-2


@pytest.mark.parametrize("arch", sorted(set(ARCHS) - set(VALID)))
def test_post_norm_blocks_are_refused_in_one_line(arch):
    lm = _lm(arch)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with pytest.raises(LabError) as e:
        refusal.orthogonalize(lm.model, torch.randn(HIDDEN))
    msg = str(e.value)
    assert "\n" not in msg and "post_feedforward_layernorm" in msg and "use method: interventions" in msg
    assert all(torch.equal(v, lm.model.state_dict()[k]) for k, v in before.items())  # nothing was changed
    # the job's model-side step refuses before computing any direction (no prompt is ever run: none is given)
    with pytest.raises(LabError, match="use method: interventions"):
        refusal.prepare_arms(lm, refusal.RefusalConfig(method="weights"), [], [], [], None, "unused")


@pytest.mark.parametrize("sites", ["writers", "resid"])
@pytest.mark.parametrize("arch", ARCHS)
def test_the_hooks_remove_the_direction_from_every_residual(arch, sites):
    """One direction for every layer: after the hooks the embedding (writers) and every block's output have no
    component along it — as HF's hidden states show (writers: the edits are inside the blocks) and as hand-written
    hooks that read each block's output after the edit show (resid: HF records a block's output before any forward
    hook on it runs, so its hidden states cannot show a resid_post edit)."""
    lm = _lm(arch)
    n, ids = lm.n_layers, _ids(lm)
    r = torch.randn(HIDDEN, generator=torch.Generator().manual_seed(6))
    u = r / r.norm()
    plain = _run(lm.model, ids).hidden_states
    sites_read = ["embed"] + [f"resid_post.{L}" for L in range(n)]
    with iv.apply(lm.model, refusal.ablation_edits(r, n, sites=sites)), ref.record(lm.model, arch, sites_read) as got:
        hs = _run(lm.model, ids).hidden_states
    read = [got[s] for s in sites_read]
    if sites == "writers":
        assert all(torch.equal(a, b) for a, b in zip(read[:n], hs[:n]))
    for i, h in enumerate(read):
        if sites == "resid" and i == 0:  # the resid hooks leave the embedding as it is
            continue
        assert float((h @ u).abs().max()) <= 1e-5 * float(h.norm(dim=-1).max())
        assert i == n or float((plain[i] @ u).abs().max()) > 1e-2  # (HF's last hidden state is after the final norm)
