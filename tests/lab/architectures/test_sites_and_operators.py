"""The architecture matrix, part 1: every site kind and every operator of lab/steer/interventions.py, on a tiny
random instance of every architecture class the registry names (tests/architectures.py), against plain HF.

References: HF's own `output_hidden_states` for `embed` and `resid_post`; for the other sites, hand-written torch
hooks on the modules the HF modeling code names (tests/lab/architectures/hf_reference.py, written out per
architecture, never through `lab.model.sites`), with each edit written out in plain torch. HF has no notion of
`attn_out`/`mlp_in`/`mlp_out` or of an edit, so that is the closest reference there is; the block's own arithmetic
(resid_post.L = resid_post.(L−1) + attn_out.L + mlp_out.L, mlp_in.L = the pre-MLP norm of the residual after
attention) pins what those hooks read.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch

from lab.errors import LabError
from lab.steer import interventions as iv
from lab.steer.readouts import pad_left
from lab.steer.transcoder import Transcoder
from tests.architectures import ARCHS, HIDDEN, loaded
from tests.lab.architectures import hf_reference as ref

LAYER = 2
SITES = ("embed", f"resid_post.{LAYER}", f"attn_out.{LAYER}", f"mlp_in.{LAYER}", f"mlp_out.{LAYER}")
OPS = ("Add", "Ablate", "Patch", "Bias", "EditFeatures")
TEXTS = (
    "Trial 1 : Do you detect an injected thought ? If so , what is it about ?",
    "I am an interpretability researcher studying language models like you",
)


@cache
def _lm(arch: str):
    return loaded(arch)


@cache
def _batch(arch: str, shift: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Two left-padded rows longer than the sliding window; `shift` > 0: other tokens in the same layout."""
    tok = _lm(arch).tokenizer
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    if shift:
        rows = [[4 + (i + shift) % (len(tok) - 8) for i in r] for r in rows]
    return pad_left(rows, tok.pad_token_id)


def _run(arch: str, ids, mask, **kw):
    with torch.no_grad():
        return _lm(arch).model(input_ids=ids, attention_mask=mask, **kw)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("arch", ARCHS)
def test_sites_are_what_hf_computes(arch):
    """embed and resid_post.L are HF's hidden states; attn_out.L and mlp_out.L are what each sublayer adds to the
    residual (they sum to it on every architecture); mlp_in.L is the pre-MLP norm of the residual after attention
    (the residual itself on OLMo 3); the hand-written hooks read the same values."""
    lm, (ids, mask, _) = _lm(arch), _batch(arch)
    n = lm.n_layers
    sites = ["embed"] + [f"{k}.{L}" for L in range(n) for k in ("resid_post", "attn_out", "mlp_in", "mlp_out")]
    with iv.capture(lm.model, sites) as got, ref.record(lm.model, arch, sites) as want:
        out = _run(arch, ids, mask, output_hidden_states=True)
    a = {s: v[0] for s, v in got.items()}
    assert all(torch.equal(a[s], want[s]) for s in sites)
    hs = out.hidden_states
    assert len(hs) == n + 1 and torch.equal(a["embed"], hs[0])
    for L in range(n - 1):  # HF's last hidden state is after the final norm
        assert torch.equal(a[f"resid_post.{L}"], hs[L + 1])
    for L in range(n):
        before = a["embed"] if L == 0 else a[f"resid_post.{L - 1}"]
        mid = before + a[f"attn_out.{L}"]
        torch.testing.assert_close(a[f"resid_post.{L}"], mid + a[f"mlp_out.{L}"], rtol=0, atol=1e-5)
        torch.testing.assert_close(a[f"mlp_in.{L}"], ref.mlp_input(lm.model, arch, L, mid), rtol=0, atol=1e-5)
    assert float(a[f"attn_out.{LAYER}"].abs().max()) > 1e-3 and float(a[f"mlp_out.{LAYER}"].abs().max()) > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_capture_stop_reads_the_same_and_hooks_go_away(arch):
    lm, (ids, mask, _) = _lm(arch), _batch(arch)
    before, hooks = _run(arch, ids, mask).logits, _hooks(lm.model)
    with iv.capture(lm.model, list(SITES)) as full:
        _run(arch, ids, mask)
    with iv.capture(lm.model, list(SITES), stop=True) as cut:
        _run(arch, ids, mask)
    assert all(torch.equal(full[s][0], cut[s][0]) for s in SITES)
    assert _hooks(lm.model) == hooks
    assert torch.equal(_run(arch, ids, mask).logits, before)


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _transcoder() -> Transcoder:
    g = _gen(7)
    return Transcoder(
        w_enc=0.5 * torch.randn(HIDDEN, 16, generator=g),
        w_dec=0.5 * torch.randn(16, HIDDEN, generator=g),
        b_enc=0.1 * torch.randn(16, generator=g),
        b_dec=torch.zeros(HIDDEN),
    )


def _operator(op: str, arch: str, site: str, pad: list[int]):
    """(the lab's operator, the same edit written out in plain torch as fn(h, pos, mlp_input))."""
    g = _gen(11)
    if op == "Add":
        v, s = torch.randn(2, HIDDEN, generator=g), torch.tensor([0.5, 2.0])
        start = torch.tensor([pad[0] + 3, pad[1] + 2])

        def add(h, pos, _x):
            out = h.clone()
            for b in range(h.shape[0]):
                out[b, pos >= start[b]] += s[b] * v[b]
            return out

        return iv.Add(site, v, s, start), add
    if op == "Ablate":
        r = torch.randn(HIDDEN, generator=g)
        u = r / r.norm()
        return iv.Ablate(site, r, weight=0.75), lambda h, pos, _x: h - 0.75 * (h @ u)[..., None] * u
    if op == "Patch":
        ids2, mask2, _ = _batch(arch, shift=5)
        with iv.capture(_lm(arch).model, [site]) as other:
            _run(arch, ids2, mask2)
        vals, m = other[site][0], torch.zeros(ids2.shape, dtype=torch.bool)
        m[0, pad[0] + 4 :] = True  # row 0 from its 5th token on; row 1 untouched

        def patch(h, pos, _x):
            return torch.where(m[:, pos].unsqueeze(-1), vals[:, pos], h)

        return iv.Patch(site, vals, m), patch
    if op == "Bias":
        v = torch.randn(HIDDEN, generator=g)
        return iv.Bias(site, v), lambda h, pos, _x: h + v
    tc, feats = _transcoder(), [1, 5, 9]

    def features(h, pos, x):  # f = relu(x W_enc + b_enc); chosen features set to 3.0 from position 4 on
        f = torch.relu(x @ tc.w_enc + tc.b_enc)
        new = f.clone()
        new[..., feats] = 3.0
        return torch.where((pos >= 4)[None, :, None], h + (new - f) @ tc.w_dec, h)

    return iv.EditFeatures(site, tc, feats, values=3.0, start=4), features


def _by_hand(arch: str, site: str, fn):
    """The edit as hand-written hooks: fn(h, pos, x) at the site, x = what the block's MLP read in this call."""
    model, layer = _lm(arch).model, site.split(".")[-1]
    seen: dict[str, torch.Tensor] = {}
    mlp = ref.module(model, arch, f"mlp_in.{layer}") if site != "embed" else None
    hook = mlp.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0])) if mlp else None

    class Ctx:
        def __enter__(self):
            self.inner = ref.edit(model, arch, site, lambda h, pos: fn(h, pos, seen.get("x")))
            return self.inner.__enter__()

        def __exit__(self, *exc):
            self.inner.__exit__(*exc)
            if hook is not None:
                hook.remove()

    return Ctx()


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("arch", ARCHS)
def test_operator_at_site_equals_the_hand_written_edit(arch, op, site):
    """The edited site holds exactly fn(clean value) and the logits equal the same edit made by hand-written hooks
    (EditFeatures: mlp_out sites only, anywhere else a one-line LabError)."""
    lm, (ids, mask, pad) = _lm(arch), _batch(arch)
    if op == "EditFeatures" and not site.startswith("mlp_out"):
        with pytest.raises(LabError, match="EditFeatures works on an mlp_out site"):
            with iv.apply(lm.model, [iv.EditFeatures(site, _transcoder(), [1], values=3.0)]):
                pass
        return
    lab_op, fn = _operator(op, arch, site, pad)
    layer = site.split(".")[-1]
    keep = [site] + ([f"mlp_in.{layer}"] if site != "embed" else [])
    with iv.capture(lm.model, keep) as clean:
        plain = _run(arch, ids, mask).logits
    with iv.apply(lm.model, [lab_op]), iv.capture(lm.model, [site]) as edited:
        got = _run(arch, ids, mask).logits
    with _by_hand(arch, site, fn):
        want = _run(arch, ids, mask).logits
    pos = torch.arange(ids.shape[1])
    x = clean[f"mlp_in.{layer}"][0] if site != "embed" else None
    torch.testing.assert_close(edited[site][0], fn(clean[site][0], pos, x), rtol=0, atol=1e-6)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert float((got - plain).abs().max()) > 1e-4  # the edit did something downstream


@pytest.mark.parametrize("arch", ARCHS)
def test_edits_count_positions_across_decode_steps(arch):
    """Under HF `generate` (prefill, then one token per call, HF's own cache: sliding-window layers on Gemma 3 and
    OLMo 3) an `Add` from position 5 steers the same tokens as a hand-written hook that counts positions itself."""
    lm, (ids, mask, pad) = _lm(arch), _batch(arch)
    v, start = 4.0 * torch.randn(HIDDEN, generator=_gen(3)), torch.tensor(pad) + 5
    kw = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)

    def add(h, pos):
        return torch.where((pos[None, :] >= start[:, None]).unsqueeze(-1), h + v, h)

    with torch.no_grad():
        plain = lm.model.generate(ids, **kw)
        with iv.apply(lm.model, [iv.Add(f"attn_out.{LAYER}", v.expand(2, -1), 1.0, start)]):
            got = lm.model.generate(ids, **kw)
        with ref.edit(lm.model, arch, f"attn_out.{LAYER}", add):
            want = lm.model.generate(ids, **kw)
    assert torch.equal(got, want) and got.shape[1] == ids.shape[1] + 6
    assert not torch.equal(got, plain)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_trained_bias_gets_the_hand_written_gradient(arch):
    """`Bias` is what training/bias trains: the gradient of a loss on the logits with respect to its vector, at
    mlp_out (its default site) and resid_post, equals the gradient through a hand-written hook."""
    lm, (ids, mask, _) = _lm(arch), _batch(arch)
    for site in (f"mlp_out.{LAYER}", f"resid_post.{LAYER}"):
        grads = []
        for by_hand in (False, True):
            v = torch.zeros(HIDDEN, requires_grad=True)
            ctx = (
                ref.edit(lm.model, arch, site, lambda h, pos, v=v: h + v)
                if by_hand
                else iv.apply(lm.model, [iv.Bias(site, v)])
            )
            with ctx:
                logits = lm.model(input_ids=ids, attention_mask=mask).logits
            torch.log_softmax(logits[:, -1], -1)[:, 5].sum().backward()
            grads.append(v.grad)
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)
        assert float(grads[0].abs().max()) > 1e-4
