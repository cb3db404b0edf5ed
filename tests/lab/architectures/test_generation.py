"""The architecture matrix, generation row: for every architecture in `tests.architectures.ARCHS` the lab's batched
decode (`lab.generate.decode.decode_batch`, and `Runner.run` around it) equals a one-row HF `generate` token for
token — greedy and sampled, with per-row injection (`Injection.per_layer`, the runner's path) and without, with
finished rows evicted and kept, with the shared-prefix attention on and off. Rows are 17-29 tokens against a
sliding window of `WINDOW` = 8, so every sliding layer of Gemma 3 / OLMo 3 decodes past its window, and the pads the
loop puts between the shared prefix and each row's suffix sit inside windows.

The reference for a row is `model.generate` on that row alone (no padding, no shared cache), the injection as the
same forward hook (`interventions.apply` with the row's `Injection(...).op()`).

Sampling: HF cannot be the whole reference, because HF draws with `torch.multinomial` from the global RNG, once per
batch step, while the lab draws each row by inverse CDF from one float64 uniform of that row's own generator (so a
row's sample does not depend on its batch). The reference therefore keeps everything else HF's — the model's forward
passes and cache, and the filtering by HF's own `TemperatureLogitsWarper`/`TopKLogitsWarper`/`TopPLogitsWarper` —
and makes only the draw the lab's: a logits processor after HF's warpers takes one uniform from a generator seeded as
the lab seeds that row and maps it through the same inverse CDF (`decode._pick` at temperature 1 on the already
filtered scores), leaving HF's greedy step to pick that token. That the lab's filter equals HF's warpers bit for bit,
and that its draws follow the filtered distribution, is tests/lab/generate/test_decode.py.
"""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from lab.generate import decode, prefix_attention
from lab.generate.runner import Runner, VectorBank, _seed
from lab.model import loading
from lab.protocol.prompts import inject_start, render
from lab.steer import interventions as iv
from lab.steer.concepts import ConceptVector
from lab.steer.injection import Injection
from tests import architectures as A
from tests.conftest import trial

NEW = 12  # new tokens per row
SAMPLING = decode.Sampling(0.9, top_k=20, top_p=0.95)
SEEDS = [101, 202, 303, 404]


@functools.cache
def _lm(arch: str):
    return A.loaded(arch)


def _rows(arch: str) -> tuple[list[list[int]], int]:
    """Four rows sharing a 14-token prefix (longer than the window), suffixes of 7, 10, 3 and 15 tokens: the pads
    between prefix and suffix (up to 12 per row) lie inside the sliding windows of the rows' first positions."""
    vocab = _lm(arch).model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(7)
    word = lambda n: (torch.randint(5, vocab - 3, (n,), generator=g)).tolist()  # no pad/eos/image tokens
    prefix = word(14)
    return [prefix + word(k) for k in (7, 10, 3, 15)], len(prefix)


def _injection(
    arch: str, rows: list[list[int]], prefix: int
) -> tuple[list[int], list[torch.Tensor], list[float], list[int]]:
    """Per row: layer, vector, raw strength, start (in the row's own positions, at or after the prefix). Two layers
    share the batch; row 2 is a control (strength 0)."""
    lm = _lm(arch)
    n = lm.spec.n_layers
    g = torch.Generator().manual_seed(3)
    vecs = [torch.randn(A.HIDDEN, generator=g) for _ in rows]
    return [1, n - 2, 1, n - 2], vecs, [4.0, 6.0, 0.0, 5.0], [prefix, prefix + 2, prefix, prefix + 5]


def _steer(arch: str, rows: list[list[int]], prefix: int):
    """The runner's per-row operators (`Runner._steer`): `Injection.per_layer` in the padded layout."""
    layers, vecs, strengths, starts = _injection(arch, rows, prefix)
    width = max(len(r) for r in rows)
    padded = [width - len(r) + s for r, s in zip(rows, starts)]
    injections = Injection.per_layer(layers, vecs, strengths, padded, A.HIDDEN)
    return lambda active: [inj.rows(torch.tensor(active)).op() for inj in injections]


class _LabDraw(LogitsProcessor):
    """The lab's draw after HF's warpers: one float64 uniform from this row's generator, inverse CDF of the filtered
    distribution; returns a one-hot score row, so HF's greedy step picks exactly that token."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        tok = decode._pick(scores, decode.Sampling(1.0), [self.gen])
        return torch.full_like(scores, float("-inf")).scatter(1, tok[:, None], 0.0)


def _hf_one_row(model, row, max_new, ops=(), sampling=None, seed=None, stop=None) -> list[int]:
    """One-row HF `generate` on `row` under the forward hooks `ops`; with `sampling`, HF's warpers for it (those HF
    itself would add: temperature ≠ 1, top-k > 0, top-p < 1) and then the lab's draw from a generator seeded `seed`.
    Stops after the first token in `stop` (HF's eos semantics)."""
    x = torch.tensor([row])
    procs = None
    if sampling is not None:
        s = sampling
        warpers = [TemperatureLogitsWarper(s.temperature)] if s.temperature != 1.0 else []
        warpers += [TopKLogitsWarper(s.top_k)] if s.top_k > 0 else []
        warpers += [TopPLogitsWarper(s.top_p)] if s.top_p < 1.0 else []
        procs = LogitsProcessorList([*warpers, _LabDraw(seed)])
    with torch.no_grad(), iv.apply(model, list(ops)):
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=max_new,
            do_sample=False,
            logits_processor=procs,
            pad_token_id=0,
            eos_token_id=sorted(stop) if stop else None,
        )
    return out[0, len(row) :].tolist()


def _reference(arch: str, sampled: bool, injected: bool, stop=None) -> list[list[int]]:
    lm = _lm(arch)
    rows, prefix = _rows(arch)
    layers, vecs, strengths, starts = _injection(arch, rows, prefix)
    out = []
    for b, row in enumerate(rows):
        ops = [Injection(layers[b], vecs[b][None], [strengths[b]], [starts[b]]).op()] if injected else []
        out.append(_hf_one_row(lm.model, row, NEW, ops, SAMPLING if sampled else None, SEEDS[b], stop))
    return out


def _lab(arch: str, sampled: bool, injected: bool, stop=frozenset(), **kw) -> list[list[int]]:
    lm = _lm(arch)
    rows, prefix = _rows(arch)
    steer = _steer(arch, rows, prefix) if injected else None
    sampling = SAMPLING if sampled else decode.Sampling()
    return decode.decode_batch(
        lm.model, rows, prefix, NEW, set(stop), 0, steer=steer, sampling=sampling, seeds=SEEDS, **kw
    )


def _stops(free: list[list[int]]) -> set[int]:
    """Stop tokens that end rows 0 and 2 early (by their 6th and 8th tokens) while some row runs all NEW tokens, so
    rows leave the batch mid-decode and the others go on."""
    for x in free[0][1:6]:
        for y in free[2][2:8]:
            if any(not set(r) & {x, y} for r in free):
                return {x, y}
    raise AssertionError(f"no stop pair leaves a row running: {free}")


@pytest.mark.parametrize("arch", A.ARCHS)
@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
@pytest.mark.parametrize("injected", [False, True], ids=["plain", "injected"])
def test_batched_decode_equals_one_row_generate(arch, sampled, injected):
    """No stop tokens: every row runs NEW tokens, the batch at full width past the window; then stop tokens that
    end two rows early, evicted and kept, shared-prefix attention on and off: every row equals its one-row
    `generate` (truncated at its first stop token, which is what HF's eos does)."""
    free = _reference(arch, sampled, injected)
    assert _lab(arch, sampled, injected) == free
    stop = _stops(free)
    want = _reference(arch, sampled, injected, stop)
    assert [len(r) for r in want] != [NEW] * 4
    for evict in (True, False):
        for share in (True, False):
            got = _lab(arch, sampled, injected, stop, evict=evict, share_attention=share)
            assert got == want, (evict, share)
    assert _lab(arch, sampled, injected, stop, static=False) == want  # HF's growing cache (the benchmark's ablation)
    if injected:
        assert free != _reference(arch, sampled, False)  # the injection changed the text


@pytest.mark.parametrize("arch", A.SLIDING)
def test_eager_attention_gets_additive_masks(arch):
    """A checkpoint loaded with `attn_implementation="eager"` adds its mask to the scores: the loop hands it the same
    masks as 0 / lowest floats, and greedy injected decode still equals one-row `generate` (eager there too)."""
    cfg = _lm(arch).model.config
    before = cfg._attn_implementation
    cfg._attn_implementation = "eager"
    try:
        assert cfg.get_text_config()._attn_implementation == "eager"
        assert _lab(arch, False, True) == _reference(arch, False, True)
    finally:
        cfg._attn_implementation = before
    assert cfg.get_text_config()._attn_implementation == "sdpa"


@pytest.mark.parametrize("arch", A.SLIDING)
@torch.no_grad()
def test_shared_prefix_attention_on_sliding_layers(arch):
    """On sliding-window models the shared-prefix attention is on under the loop's own masks (and off without them),
    and gives the same logits as SDPA over the same buffer for the suffix prefill and a decode step."""
    lm = _lm(arch)
    model, (rows, p) = lm.model, _rows(arch)
    windows = loading.sliding_windows(model)
    assert windows == {"full_attention": None, "sliding_attention": A.WINDOW}
    assert prefix_attention.supported(model, windowed=True) and not prefix_attention.supported(model)
    width = max(len(r) for r in rows)
    ids, mask = decode.padded(rows, p, 0, "cpu", extra=1)
    pos = decode.positions_of(mask)
    real = mask.bool()

    def run(share: bool):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        model(
            input_ids=ids[:1, :p],
            attention_mask=decode.attention_masks(windows, real[:1], pos[:1], pos[:1, :p], 0),
            cache=cache,
        )
        cache = decode._buffer_cache(cache, len(rows), width + 1, True)
        with prefix_attention.shared(model, p if share else 0, windowed=True) as on:
            m1 = decode.attention_masks(windows, real, pos, pos[:, p:width], p)
            first = model(input_ids=ids[:, p:], attention_mask=m1, position_ids=pos[:, p:width], cache=cache)
            nxt = first.logits[:, -1].argmax(-1, keepdim=True)
            m2 = decode.attention_masks(windows, real, pos, pos[:, width:], width)
            second = model(input_ids=nxt, attention_mask=m2, position_ids=pos[:, width:], cache=cache)
        return on, first.logits, second.logits

    on, a, b = run(True)
    off, a0, b0 = run(False)
    assert (on, off) == (True, False)
    torch.testing.assert_close(a, a0, rtol=0, atol=1e-5)
    torch.testing.assert_close(b, b0, rtol=0, atol=1e-5)


def _trial(arch: str, concept: str, layer: int, strength: float, kind: str, n: int, temperature: float, forced=False):
    return trial(
        model=f"tiny-{arch}", concept=concept, layer=layer, strength=strength, kind=kind, trial_number=n,
        forced=forced, max_new_tokens=NEW, temperature=temperature,
    )  # fmt: skip


@pytest.mark.parametrize("arch", A.ARCHS)
def test_runner_equals_one_row_generate(arch):
    """`Runner.run` on the paper's prompt in the family's chat format (≈ 130 tokens, ≈ 105 shared; a forced-identification
    prompt 12 longer, so the other rows carry 12 pads inside their windows), mixed layers, strengths and a control
    in one batch: each trial's response equals one-row `generate` on its whole prompt with
    that trial's injection — greedy and sampled (seeded per trial as the runner seeds it) — and for sliding models
    ZeRO-3's engine ('hf': whole rows left-padded) gives the same greedy responses."""
    lm = _lm(arch)
    n_layers = lm.spec.n_layers
    g = torch.Generator().manual_seed(5)
    layers = (1, n_layers - 2)
    vecs = {
        (c, k): ConceptVector(c, k, torch.randn(A.HIDDEN, generator=g), 6.0) for c in ("bread", "ocean") for k in layers
    }
    bank = VectorBank(vecs, {k: 5.0 for k in layers})
    tok, stop = lm.tokenizer, {lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id, 3}
    for temperature in (0.0, 1.0):
        trials = [
            _trial(arch, "bread", layers[0], 1.0, "injection", 1, temperature),
            _trial(arch, "ocean", layers[1], 1.5, "injection", 12, temperature, forced=True),  # 12 tokens longer
            _trial(arch, "bread", layers[0], 1.0, "control", 3, temperature),
            _trial(arch, "ocean", layers[1], 1.0, "random", 2, temperature),
        ]
        got = Runner(lm, bank, batch_size=len(trials)).run(trials)
        for t, row in zip(trials, got):
            prompt = render(lm, t.prompt_variant, t.dialogue_format, t.trial_number, t.forced, concept=t.concept)
            ids, start = inject_start(tok, prompt)
            assert len(ids) > 100 and start > 4 * A.WINDOW
            op = Injection(t.layer, bank.vector(t)[None], [bank.strengths(t)[0]], [start]).op()
            sampling = decode.Sampling(temperature) if temperature else None  # the runner's 'plain' sampling
            new = _hf_one_row(lm.model, ids, NEW, [op], sampling, _seed(t.trial_id), stop)
            n = next((j for j, x in enumerate(new) if x in (tok.eos_token_id, tok.pad_token_id)), len(new))
            assert (row["response"], row["new_tokens"]) == (tok.decode(new[:n], skip_special_tokens=True).strip(), n)
        if temperature == 0 and arch in A.SLIDING:
            hf = Runner(lm, bank, batch_size=len(trials), engine="hf").run(trials)
            assert [r["response"] for r in hf] == [r["response"] for r in got]


@pytest.mark.parametrize("arch", A.ARCHS)
@torch.no_grad()
def test_readout_prefix_path_on_every_architecture(arch):
    """The label-logit readout's shared-prefix path (`readouts.forward`, the decode loop's sibling) equals one-row
    forwards on every architecture: on sliding-window models it takes the plain left-padded forward (its prefix
    cache would put pads inside HF's column-counted windows: 0.3-0.4 logit errors before)."""
    from lab.steer import readouts

    lm = _lm(arch)
    rows, _ = _rows(arch)
    one = torch.cat([readouts.forward(lm, [r], share_prefix=False).logits for r in rows])
    torch.testing.assert_close(readouts.forward(lm, rows).logits, one, rtol=0, atol=1e-5)
