"""Edits of the forward pass at named sites, applied through one context manager; `capture` reads any site.

Sites (TransformerLens wording, 0-based block index L):
  `embed`        output of the token embedding (what block 0 reads)
  `resid_post.L` output of decoder block L (the residual stream after it)
  `attn_out.L`   what block L's attention adds to the residual (o_proj; after the post-attention norm on Gemma/OLMo)
  `mlp_in.L`     input of block L's MLP (after its pre-MLP norm where there is one; what a transcoder reads)
  `mlp_out.L`    what block L's MLP adds to the residual (down_proj; after the post-MLP norm on Gemma/OLMo)
(lab/model/sites.py says which module each is on each architecture.)

Operators (frozen dataclasses, one site each):
  `Add`           h + s_b·v_b on positions [start_b, end_b) of row b (concept injection)
  `Ablate`        h − w·(h·r̂)r̂ on every position (project a direction out: abliteration)
  `Patch`         h ← cached values at chosen rows/positions (knock-in / knock-out)
  `EditFeatures`  on an MLP: encode its input with a feature dictionary, set/scale chosen features, add the
                  decoded difference to its output (so the dictionary's reconstruction error is kept)
  `Bias`          h + v on every position and row (a trained steering vector; differentiable in v)

Positions are absolute: each site counts the tokens it has seen inside one `apply` context (a prefill of T tokens,
then one per generation step), plus `offset` for a KV cache the first call continues from. Use one context per
`generate` call or forward pass. Every hook is removed in `finally`, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from lab.errors import LabError
from lab.model.sites import SITE_KINDS, Site, output_tensor, replace_output  # noqa: F401  (SITE_KINDS re-exported)


def _rows(x: Any, batch: int, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=dtype)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape[0] != batch:
        raise LabError(f"{name} has {t.shape[0]} rows, expected {batch}")
    return t


class Intervention(Protocol):
    """What `apply` runs at a site: `edit(h, pos, inputs)` gets the site's activation [B, T, d], the absolute
    positions [T] of this call's tokens and (for `mlp_out` sites with `EditFeatures`) the MLP's input."""

    site: str | Site

    def edit(self, h: torch.Tensor, pos: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor: ...


@dataclass(frozen=True, eq=False)
class Add:
    """Add `strengths[b] * vectors[b]` at positions `>= starts[b]` (and `< ends[b]` when given)."""

    site: str | Site
    vectors: torch.Tensor  # [B, d] or [d]
    strengths: Any = 1.0  # float or [B]
    starts: Any = 0  # int or [B]
    ends: Any = None  # None, int or [B]

    def __post_init__(self) -> None:
        v = torch.as_tensor(self.vectors, dtype=torch.float32)
        v = v.unsqueeze(0) if v.ndim == 1 else v
        s = torch.as_tensor(self.strengths, dtype=torch.float32)
        b = max(v.shape[0], s.shape[0] if s.ndim else 1)
        v = v.expand(b, -1) if v.shape[0] == 1 else v
        s = _rows(s, b, "strengths")
        object.__setattr__(self, "_delta", s[:, None] * v)  # computed once, in float32
        object.__setattr__(self, "_start", _rows(self.starts, b, "starts", torch.long))
        object.__setattr__(self, "_end", None if self.ends is None else _rows(self.ends, b, "ends", torch.long))

    def edit(self, h: torch.Tensor, pos: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        d = self._delta.to(h.device, h.dtype)  # type: ignore[attr-defined]
        if h.shape[0] != d.shape[0] and d.shape[0] != 1:
            raise RuntimeError(f"Add at {self.site} was set up for {d.shape[0]} rows but saw a batch of {h.shape[0]}")
        st = self._start.to(h.device)[:, None]  # type: ignore[attr-defined]
        inside = pos[None, :] >= st
        if self._end is not None:  # type: ignore[attr-defined]
            inside = inside & (pos[None, :] < self._end.to(h.device)[:, None])  # type: ignore[attr-defined]
        return torch.where(inside.unsqueeze(-1), h + d[:, None, :], h)


@dataclass(frozen=True, eq=False)
class Ablate:
    """Remove `weight` × the component along `direction` (normalised here) at every position of every row."""

    site: str | Site
    direction: torch.Tensor  # [d]
    weight: float = 1.0

    def __post_init__(self) -> None:
        r = torch.as_tensor(self.direction, dtype=torch.float32).flatten()
        n = float(r.norm())
        if not n > 0:
            raise LabError(f"Ablate at {self.site}: the direction has zero norm")
        object.__setattr__(self, "_unit", r / n)

    def edit(self, h: torch.Tensor, pos: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        if self.weight == 0:
            return h
        r = self._unit.to(h.device, h.dtype)  # type: ignore[attr-defined]
        return h - self.weight * (h @ r)[..., None] * r


@dataclass(frozen=True, eq=False)
class Patch:
    """Replace the activation with `values[b, p]` at absolute positions p < values.shape[1] where `mask[b, p]`
    (default: every row and position that `values` covers). `values` come from a `capture` of another run with the
    same token layout (same batch, same padding)."""

    site: str | Site
    values: torch.Tensor  # [B, T, d]
    mask: torch.Tensor | None = None  # [B, T] bool

    def edit(self, h: torch.Tensor, pos: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        vals = self.values
        if vals.shape[0] != h.shape[0]:
            raise RuntimeError(f"Patch at {self.site} holds {vals.shape[0]} rows but saw a batch of {h.shape[0]}")
        covered = pos < vals.shape[1]
        if not bool(covered.any()):
            return h
        idx = pos.clamp(max=vals.shape[1] - 1)
        src = vals[:, idx].to(h.device, h.dtype)  # [B, T, d]
        m = covered[None, :].expand(h.shape[0], -1)
        if self.mask is not None:
            m = m & self.mask[:, idx].to(h.device)
        return torch.where(m.unsqueeze(-1), src, h)


class FeatureDictionary(Protocol):
    """What `EditFeatures` needs of a transcoder / SAE: features of an input, and the decoder rows."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...  # [..., d_in] -> [..., n_features]

    @property
    def w_dec(self) -> torch.Tensor: ...  # [n_features, d_out]


@dataclass(frozen=True, eq=False)
class EditFeatures:
    """On `mlp_out.L`: encode the MLP input of the same block with `dictionary`, set chosen features to `values`
    (or multiply them by `scales`), and add Σ (f_new − f)·w_dec to the MLP output at positions `>= start`.
    `values` may be a tensor [B, T, k] of cached activations (patching features) or one number per feature."""

    site: str | Site  # mlp_out.L (the block's mlp_in is read automatically)
    dictionary: Any
    features: Sequence[int]
    values: Any = None  # None, float, [k] or [B, T, k]
    scales: Any = None  # None, float or [k]
    start: int = 0

    def edit(self, h: torch.Tensor, pos: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        if len(self.features) == 0:
            return h
        assert inputs is not None
        idx = torch.as_tensor(list(self.features), dtype=torch.long, device=h.device)
        f = self.dictionary.encode(inputs.float())[..., idx]  # [B, T, k]
        if self.values is not None:
            v = torch.as_tensor(self.values, dtype=f.dtype, device=f.device)
            new = v[:, pos.clamp(max=v.shape[1] - 1)] if v.ndim == 3 else v.expand_as(f)
        else:
            new = f * torch.as_tensor(self.scales if self.scales is not None else 1.0, dtype=f.dtype, device=f.device)
        delta = (new - f) @ self.dictionary.w_dec[idx].to(f.device, f.dtype)  # [B, T, d]
        on = (pos >= self.start)[None, :, None]
        return torch.where(on, h + delta.to(h.dtype), h)


@dataclass(frozen=True, eq=False)
class Bias:
    """h + v at every position and row of `site` (broadcast over the batch; differentiable in `vector`)."""

    site: str | Site
    vector: torch.Tensor  # [d]

    def edit(self, h: torch.Tensor, pos: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        return h + self.vector.to(h.device, h.dtype)


@dataclass
class _SiteState:
    seen: int
    ops: list[Intervention] = field(default_factory=list)
    inputs: torch.Tensor | None = None


class Seen(dict):  # type: ignore[type-arg]
    """{site: tokens that site has seen so far}, live while the `apply` context is open."""

    def __getitem__(self, site: str) -> int:
        return dict.__getitem__(self, site).seen


@contextmanager
def apply(model: Any, interventions: Sequence[Intervention], offset: int = 0) -> Iterator[Seen]:
    """Apply every intervention (in list order per site) for the duration of the context; yields a live
    {site: tokens seen} view. An empty list registers nothing, so logits stay bit-identical."""
    states: dict[Site, _SiteState] = {}
    handles: list[Any] = []
    try:
        for op in interventions:
            site = Site.parse(op.site)
            if isinstance(op, EditFeatures) and site.kind != "mlp_out":
                raise LabError(f"EditFeatures works on an mlp_out site, got {site}")
            states.setdefault(site, _SiteState(offset)).ops.append(op)
        for site, st in states.items():
            mod = site.module(model)
            if site.kind == "mlp_in":
                handles.append(mod.register_forward_pre_hook(_pre_hook(st)))
            else:
                handles.append(mod.register_forward_hook(_post_hook(st)))
        for site, st in states.items():  # what the MLP reads (after any mlp_in edit; mlp_out may be a post-norm)
            if any(isinstance(op, EditFeatures) for op in st.ops):
                mlp = Site("mlp_in", site.layer).module(model)
                handles.append(mlp.register_forward_pre_hook(_keep_input(st)))
        yield Seen({str(site): st for site, st in states.items()})
    finally:
        for hd in handles:
            hd.remove()


def _positions(st: _SiteState, h: torch.Tensor) -> torch.Tensor:
    pos = st.seen + torch.arange(h.shape[1], device=h.device)
    st.seen += h.shape[1]
    return pos


def _keep_input(st: _SiteState) -> Any:
    def hook(_m: Any, args: tuple[Any, ...]) -> None:
        st.inputs = args[0]

    return hook


def _post_hook(st: _SiteState) -> Any:
    def hook(_m: Any, _args: Any, output: Any) -> Any:
        h = output_tensor(output)
        pos = _positions(st, h)
        for op in st.ops:
            h = op.edit(h, pos, st.inputs)
        st.inputs = None
        return replace_output(output, h)

    return hook


def _pre_hook(st: _SiteState) -> Any:
    def hook(_m: Any, args: tuple[Any, ...]) -> Any:
        h = args[0]
        pos = _positions(st, h)
        for op in st.ops:
            h = op.edit(h, pos, None)
        return (h, *args[1:])

    return hook


class StopForward(Exception):
    """Raised by `capture(..., stop=True)` after the last site it needs, to skip the rest of the model."""


@contextmanager
def capture(model: Any, sites: Sequence[str], stop: bool = False) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record each site's activation, one detached tensor per forward call. With `stop=True` the forward pass ends
    (raising `StopForward`, which this context swallows) once the deepest requested block has been read."""
    parsed = [Site.parse(s) for s in sites]
    out: dict[str, list[torch.Tensor]] = {str(s): [] for s in parsed}
    deepest = max((s.layer if s.layer is not None else -1 for s in parsed), default=-1)
    remaining = {"n": len(parsed)}
    handles = []

    def make(site: Site) -> Any:
        def record(h: torch.Tensor) -> None:
            out[str(site)].append(h.detach())
            if stop and (site.layer if site.layer is not None else -1) == deepest:
                remaining["n"] -= 1
                if remaining["n"] <= 0:
                    raise StopForward

        if site.kind == "mlp_in":
            return lambda _m, args: record(args[0])
        return lambda _m, _a, output: record(output_tensor(output))

    try:
        for s in parsed:
            mod = s.module(model)
            hk = make(s)
            handles.append(mod.register_forward_pre_hook(hk) if s.kind == "mlp_in" else mod.register_forward_hook(hk))
        if stop:  # count only the sites at the deepest layer
            remaining["n"] = sum(1 for s in parsed if (s.layer if s.layer is not None else -1) == deepest)
        try:
            yield out
        except StopForward:
            pass
    finally:
        for hd in handles:
            hd.remove()
