"""A hand-written batched decode loop for short steered generations that share a prompt prefix.

What it does per batch (what HF `generate` over a repeated prefix cache did, minus its per-step overheads):
  1. the shared prefix once, batch 1, into a small cache;
  2. a pre-allocated key/value buffer per layer ([rows, kv heads, prefix + suffix + new tokens, head dim]), the
     prefix broadcast into it once: every later step writes one column in place instead of concatenating the whole
     cache (`torch.cat` copied ~0.6 GB per step at 64 rows × 200 positions);
  3. the rows' own suffixes in one batched forward (left-padded after the prefix, pads masked, positions counted as
     HF does: cumsum of the mask − 1), logits only at the last position;
  4. one token per step for the rows still running: a row that emits a stop token is evicted from the batch (its
     cache rows dropped), so finished rows cost nothing;
  5. attention reads the prefix's keys/values once per step for the whole batch (`lab.generate.prefix_attention`), not
     once per row, where the model's attention is plain SDPA.
Sliding-window layers (Gemma 3: five in six, window 1024 on 27B; OLMo 3: three in four): the buffer keeps every
position of every layer, and the loop passes its own boolean masks, one per attention type (`attention_masks`): a
sliding layer's query sees a key when the key is no pad and their positions differ by less than the window. Positions
count real tokens only, as a one-row HF `generate` counts them; HF's own sliding masks count cache columns, which is
wrong here because the pads sit between the prefix and each row's suffix (and HF's sliding cache layers keep only the
last window − 1 columns, which is what broke the static buffer). Models whose layers all attend to everything
(Llama, Qwen3-MoE) keep HF's own mask construction, unchanged.
Interventions are ordinary `lab.steer.interventions` hooks: `edits` on every forward (the prefix included), and
`steer(rows)` — the per-row operators for the rows still in the batch — on the suffix and decode forwards, at
absolute (padded) positions.

Greedy picks `argmax` of the float32 logits, as HF does. Sampling applies temperature, then top-k, then top-p
(HF's order and semantics) and draws each row by inverse CDF with one uniform from its own `torch.Generator` seeded
per row, so a row's sample does not depend on which other rows share its batch or when they finish. `sampling_for`
says when a checkpoint's generation config asks for processors this loop does not implement (the caller then uses
HF `generate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from lab.errors import LabError
from lab.generate import prefix_attention
from lab.model import loading
from lab.steer import interventions as iv


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off


# generation-config fields whose HF processors this loop does not implement, with their neutral values
_UNSUPPORTED = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "min_p": (None,),
    "top_h": (None,),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "exponential_decay_length_penalty": (None,),
    "renormalize_logits": (None, False),
    "watermarking_config": (None,),
    "guidance_scale": (None, 1.0),
}


def sampling_for(model: Any, temperature: float, mode: str) -> Sampling | None:
    """The sampler for `temperature` ('plain': top-k 0 / top-p 1; 'generation_config': the checkpoint's top-k /
    top-p, HF's defaults 50 / 1.0 when unset), or None when the checkpoint's generation config asks for a processor
    this loop lacks (then HF `generate` must run)."""
    gc = getattr(model, "generation_config", None)
    if gc is not None and any(getattr(gc, k, None) not in ok for k, ok in _UNSUPPORTED.items()):
        return None
    if temperature <= 0:
        return Sampling()
    if mode != "generation_config" or gc is None:
        return Sampling(temperature)
    top_k = 50 if gc.top_k is None else int(gc.top_k)
    return Sampling(temperature, top_k, 1.0 if gc.top_p is None else float(gc.top_p))


class _Buffer(DynamicLayer):
    """A cache layer backed by one pre-allocated [rows, heads, capacity, dim] tensor, written in place."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.n = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.device = key_states.device
        self.keys = key_states.new_empty((b, h, self.capacity, d))  # only [:, :, :n] is ever read
        self.values = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        m = self.n + key_states.shape[-2]
        self.keys[:, :, self.n : m] = key_states
        self.values[:, :, self.n : m] = value_states
        self.n = m
        return self.keys[:, :, :m], self.values[:, :, :m]

    def get_seq_length(self) -> int:
        return self.n

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.keys, self.values = self.keys.index_select(0, indices), self.values.index_select(0, indices)


def _buffer_cache(prefix: Cache | None, batch: int, capacity: int, static: bool) -> Cache:
    if not static:  # HF's own growing cache, the prefix repeated over the batch (kept for the benchmark's ablation)
        cache = prefix if prefix is not None else DynamicCache()
        cache.batch_repeat_interleave(batch)
        return cache
    layers = []
    for i in range(len(prefix.layers) if prefix is not None else 0):
        k, v = prefix.layers[i].keys, prefix.layers[i].values
        lay = _Buffer(capacity)
        lay.lazy_initialization(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
        lay.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
        layers.append(lay)
    if prefix is None:
        return Cache(layer_class_to_replicate=lambda: _Buffer(capacity))  # type: ignore[arg-type]
    return Cache(layers=layers)


def _additive_masks(model: Any) -> bool:
    """Whether the model's attention wants additive float masks (eager) rather than boolean ones (SDPA); other
    implementations (flash, flex) take no 4D mask and are refused."""
    impl = model.config.get_text_config()._attn_implementation
    if impl not in ("sdpa", "eager", prefix_attention.NAME):
        raise LabError(f"the decode loop's sliding-window masks need 'sdpa' or 'eager' attention, not {impl!r}")
    return impl == "eager"


def _additive(m: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(~m, torch.finfo(dtype).min)


def attention_masks(
    windows: dict[str, int | None], real: torch.Tensor, kv_pos: torch.Tensor, q_pos: torch.Tensor, col: int
) -> Any:
    """Boolean [rows, 1, queries, keys] masks over cache columns [0, col + queries) for queries in columns [col, …),
    one per attention type (a dict keyed as the model's `layer_types`; the bare mask for type ''). The query in
    column i sees key column j when j ≤ i, j is no pad (`real`) and, in a sliding layer, q_pos − kv_pos < window
    (HF's `sliding_window_overlay`, in positions: real tokens only, so pads between prefix and suffix do not narrow
    the window). Every query also sees itself, so no row of the mask is empty (a pad's output is never read)."""
    q = q_pos.shape[1]
    n = col + q
    cols = torch.arange(n, device=real.device)
    causal = cols[None, :] <= cols[col:, None]  # [queries, keys]
    seen = real[:, None, :n] & causal
    diagonal = cols[None, :] == cols[col:, None]
    out = {}
    for kind, w in windows.items():
        m = seen if w is None else seen & (q_pos[:, :, None] - kv_pos[:, None, :n] < w)
        out[kind] = (m | diagonal)[:, None]
    return out[""] if "" in out else out


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row shares."""
    n = min(len(r) for r in rows)
    return next((i for i in range(n) if any(r[i] != rows[0][i] for r in rows[1:])), n)


def padded(rows: Sequence[Sequence[int]], prefix: int, pad_id: int, dev: Any, extra: int = 0) -> tuple[Any, Any]:
    """(ids, mask) of rows that share `rows[b][:prefix]`, each padded between that prefix and its own suffix to the
    longest row; the mask has `extra` more columns of 1 for the tokens still to come."""
    width = max(len(r) for r in rows)
    pads = [width - len(r) for r in rows]
    ids = torch.tensor([list(r[:prefix]) + [pad_id] * k + list(r[prefix:]) for k, r in zip(pads, rows)], device=dev)
    mask = torch.ones((len(rows), width + extra), dtype=torch.long, device=dev)
    for b, k in enumerate(pads):
        mask[b, prefix : prefix + k] = 0
    return ids, mask


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as HF counts them for a padded mask: cumsum − 1, pads at 1."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


def filtered(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """Logits after temperature, top-k and top-p, with HF's semantics (ties at the k-th value kept; top-p keeps the
    smallest set whose mass exceeds p, at least one token); removed tokens are −inf."""
    x = logits / s.temperature
    if s.top_k > 0:
        kth = torch.topk(x, min(s.top_k, x.shape[-1])).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if s.top_p < 1.0:
        srt, idx = torch.sort(x, descending=False)
        drop = srt.softmax(-1).cumsum(-1) <= 1 - s.top_p
        drop[:, -1] = False
        x = x.masked_fill(drop.scatter(1, idx, drop), float("-inf"))
    return x


def _pick(logits: torch.Tensor, s: Sampling, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """Greedy: argmax. Sampled: inverse CDF, one uniform per row from that row's generator, the CDF in float64 over
    the whole batch at once (`torch.multinomial` row by row was 10 % of a sampled sweep's time)."""
    if s.temperature <= 0:
        return logits.argmax(-1)
    cdf = filtered(logits, s).softmax(-1).double().cumsum(-1)
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64, device=g.device) for g in gens])
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
    return torch.where(idx < cdf.shape[-1], idx, cdf.argmax(-1))  # u·total rounded up to total: the last live token


@torch.no_grad()
def decode_batch(
    model: Any,
    rows: Sequence[Sequence[int]],
    prefix: int,
    max_new: int,
    stop: set[int],
    pad_id: int,
    edits: Sequence[Any] = (),
    steer: Callable[[list[int]], list[Any]] | None = None,
    sampling: Sampling = Sampling(),
    seeds: Sequence[int] | None = None,
    evict: bool = True,
    static: bool = True,
    share_attention: bool = True,
) -> list[list[int]]:
    """New tokens per row (up to and including its first stop token). `rows[b][:prefix]` must be the same for every
    row; `steer(active)` returns the per-row interventions for the original row indices `active`, positions counted
    in the padded layout (prefix, then row b's `width - len(rows[b])` pads, then its suffix). `share_attention`:
    attend to the prefix once per step for the whole batch (`lab.generate.prefix_attention`) where the model allows."""
    dev = next(model.parameters()).device
    n, width = len(rows), max(len(r) for r in rows)
    ids, mask = padded(rows, prefix, pad_id, dev, extra=max_new)
    positions = positions_of(mask[:, :width])
    windows = loading.sliding_windows(model)
    kv_pos = positions_of(mask) if windows else None  # every column's position: pads between prefix and suffix
    additive = windows is not None and _additive_masks(model)

    def masks(which: slice | None, q_pos: torch.Tensor, col: int) -> Any:
        """What the forward gets as `attention_mask` (for the batch rows `which`, all when None): the 2D padding
        mask (HF builds full-attention masks from it), or this loop's per-type masks where some layers slide."""
        m, kv = (mask, kv_pos) if which is None else (mask[which], kv_pos[which] if kv_pos is not None else None)
        if windows is None:
            return m[:, : col + q_pos.shape[1]]
        out = attention_masks(windows, m.bool(), kv, q_pos, col)
        if additive:  # eager attention adds its mask to the scores: 0 where seen, the dtype's lowest elsewhere
            dtype = next(model.parameters()).dtype
            out = {k: _additive(v, dtype) for k, v in out.items()} if isinstance(out, dict) else _additive(out, dtype)
        return out

    cache = None
    if prefix > 0:  # HF's sliding cache layers would keep only the window: the prefix cache keeps every position
        cache = DynamicCache(config=model.config) if windows is None else DynamicCache()
        with iv.apply(model, edits):
            prefix_mask = masks(slice(0, 1), positions[:1, :prefix], 0) if windows else None
            model(input_ids=ids[:1, :prefix], attention_mask=prefix_mask, cache=cache, use_cache=True, logits_to_keep=1)
    cache = _buffer_cache(cache, n, width + max_new, static)
    gens = [torch.Generator(device=dev).manual_seed(int(s)) for s in (seeds or [0] * n)]
    lens = torch.tensor([len(r) for r in rows], device=dev)
    active, running = list(range(n)), torch.ones(n, dtype=torch.bool)
    out: list[list[int]] = [[] for _ in range(n)]
    x, pos, col = ids[:, prefix:], positions[:, prefix:], prefix
    ops, ops_for = list(steer(active)) if steer else [], tuple(active)
    with prefix_attention.shared(model, prefix if share_attention else 0, windowed=windows is not None):
        for step in range(max_new):
            if steer and ops_for != tuple(active):
                ops, ops_for = list(steer(active)), tuple(active)
            with iv.apply(model, [*edits, *ops], offset=col):
                logits = (
                    model(
                        input_ids=x,
                        attention_mask=masks(None, pos, col),
                        position_ids=pos,
                        cache=cache,
                        use_cache=True,
                        logits_to_keep=1,
                    )
                    .logits[:, -1]
                    .float()
                )
            col += x.shape[1]
            nxt = _pick(logits, sampling, [gens[i] for i in active]).cpu()
            for j, i in enumerate(active):
                if running[i]:
                    out[i].append(int(nxt[j]))
                    running[i] = int(nxt[j]) not in stop
            if not bool(running.any()) or step == max_new - 1:
                break
            keep = [j for j, i in enumerate(active) if running[i]]
            if evict and len(keep) < len(active):
                sel = torch.tensor(keep, device=dev)
                for layer in cache.layers:
                    layer.batch_select_indices(sel)
                mask, nxt, active = mask.index_select(0, sel), nxt[keep], [active[j] for j in keep]
                kv_pos = kv_pos.index_select(0, sel) if kv_pos is not None else None
            x = nxt.to(dev)[:, None]
            pos = (lens[active] + step)[:, None]
    return out


@torch.no_grad()
def hf_generate(
    lm: Any,
    rows: Sequence[Sequence[int]],
    prefix: int,
    max_new: int,
    edits: Sequence[Any],
    steer: Callable[[list[int]], list[Any]],
    temperature: float,
    seed: int,
) -> list[list[int]]:
    """The same batch through one HF `generate` (the shared prefix's cache repeated over the batch): for ZeRO-3
    ranks (`synced_gpus`) and generation configs `generate` understands and this module does not. Sampling is
    seeded once per batch (`seed`), so a row's sample depends on its batch. With sliding-window layers no prefix is
    shared: rows are left-padded whole, so HF's window (counted in cache columns) sees no pad inside a row."""
    tok, model, dev = lm.tokenizer, lm.model, lm.device
    if loading.sliding_windows(model) is not None:
        prefix = 0  # injection starts lie past the prefix, so the padded columns of every start stay the same
    width = max(len(r) for r in rows)
    ids, mask = padded(rows, prefix, tok.pad_token_id, dev)
    kwargs: dict[str, Any] = {"do_sample": False}
    if prefix > 0:
        cache = DynamicCache(config=model.config)
        with iv.apply(model, edits):
            model(input_ids=ids[:1, :prefix], attention_mask=mask[:1, :prefix], past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(len(rows))
        kwargs["past_key_values"] = cache
    if temperature > 0:
        torch.manual_seed(seed)
        kwargs |= {"do_sample": True, "temperature": temperature}
        if lm.spec.sampling != "generation_config":  # else the checkpoint's own top-k/top-p (paper)
            kwargs |= {"top_k": 0, "top_p": 1.0}
    with iv.apply(model, [*edits, *steer(list(range(len(rows))))], offset=prefix):
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new, pad_token_id=tok.pad_token_id, **kwargs
        )
    return out[:, width:].cpu().tolist()
