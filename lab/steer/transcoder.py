"""Transcoders: a sparse feature dictionary from an MLP's input to its output (Gemma Scope 2 layout).

    f(x) = act(x @ w_enc + b_enc)          act: JumpReLU (x · [x > threshold]) or ReLU
    y(x) = f(x) @ w_dec + b_dec [+ x @ w_skip]   (optional affine skip)

`Transcoder` satisfies `lab.steer.interventions.FeatureDictionary` (`encode`, `w_dec`), so `EditFeatures` can clamp or
scale its features inside a forward pass. `to_dict`/`from_dict` round-trip; `load_transcoder` reads a Gemma Scope 2
directory (`params.safetensors` or `params.npz`, with `config.json` when present) or one file from a local path.
Training one on a model's activations: training/transcoder/.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lab.errors import LabError

_SKIP_KEYS = ("w_skip", "affine_skip_connection", "W_skip")
# Gemma Scope 2 `params.safetensors` names (lower case, skip as `affine_skip_connection`, x @ skip); Gemma Scope 1
# `params.npz` and SAELens use W_enc / W_dec; SAELens keeps the threshold as `activation_function.threshold`.
_ALIASES = {"W_enc": "w_enc", "W_dec": "w_dec", "activation_function.threshold": "threshold"}


@dataclass(frozen=True, eq=False)
class Transcoder:
    w_enc: torch.Tensor  # [d_in, n]
    w_dec: torch.Tensor  # [n, d_out]
    b_enc: torch.Tensor  # [n]
    b_dec: torch.Tensor  # [d_out]
    threshold: torch.Tensor | None = None  # [n]: JumpReLU; None: ReLU
    w_skip: torch.Tensor | None = None  # [d_in, d_out]
    meta: dict[str, Any] | None = None  # site, layer, model, training figures

    def __post_init__(self) -> None:
        d_in, n = self.w_enc.shape
        if self.w_dec.shape[0] != n or self.b_enc.shape != (n,) or self.b_dec.shape != (self.w_dec.shape[1],):
            raise LabError(
                f"transcoder shapes disagree: w_enc {tuple(self.w_enc.shape)}, w_dec "
                f"{tuple(self.w_dec.shape)}, b_enc {tuple(self.b_enc.shape)}, b_dec {tuple(self.b_dec.shape)}"
            )
        if self.threshold is not None and self.threshold.shape != (n,):
            raise LabError(f"threshold has shape {tuple(self.threshold.shape)}, expected ({n},)")
        if self.w_skip is not None and self.w_skip.shape != (d_in, self.w_dec.shape[1]):
            raise LabError(f"w_skip has shape {tuple(self.w_skip.shape)}, expected ({d_in}, {self.w_dec.shape[1]})")

    @property
    def n_features(self) -> int:
        return int(self.w_enc.shape[1])

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.w_enc.dtype) @ self.w_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x)
        if self.threshold is None:
            return torch.relu(pre)
        return pre * (pre > self.threshold)

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        y = f @ self.w_dec + self.b_dec
        if self.w_skip is not None:
            if x is None:
                raise LabError("this transcoder has an affine skip: decode needs the input x too")
            y = y + x.to(self.w_skip.dtype) @ self.w_skip
        return y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"w_enc": self.w_enc, "w_dec": self.w_dec, "b_enc": self.b_enc, "b_dec": self.b_dec}
        if self.threshold is not None:
            d["threshold"] = self.threshold
        if self.w_skip is not None:
            d["w_skip"] = self.w_skip
        d["meta"] = dict(self.meta or {})
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transcoder:
        d = _canonical(d)
        if "log_threshold" in d and "threshold" not in d:
            d["threshold"] = torch.as_tensor(d["log_threshold"]).float().exp()
        skip = next((d[k] for k in _SKIP_KEYS if k in d), None)
        t = {k: torch.as_tensor(d[k]).float() for k in ("w_enc", "w_dec", "b_enc", "b_dec")}
        thr = d.get("threshold")
        return cls(
            **t,
            threshold=None if thr is None else torch.as_tensor(thr).float(),
            w_skip=None if skip is None else torch.as_tensor(skip).float(),
            meta=dict(d.get("meta") or {}),
        )

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file (Gemma Scope 2 tensor names) with the metadata as JSON."""
        from safetensors.torch import save_file

        d = self.to_dict()
        meta = d.pop("meta")
        save_file({k: v.contiguous() for k, v in d.items()}, str(path), metadata={"meta": json.dumps(meta)})


def _canonical(d: dict[str, Any]) -> dict[str, Any]:
    return {_ALIASES.get(k, k): v for k, v in d.items()}


def save_gemma_scope(tc: Transcoder, directory: str | os.PathLike) -> Path:
    """Write `directory/params.safetensors` with the Gemma Scope 2 tensor names (`affine_skip_connection` for the
    skip) and `config.json` from `meta["config"]` when present; `load_transcoder(directory)` reads it back."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    d = {"w_enc": tc.w_enc, "w_dec": tc.w_dec, "b_enc": tc.b_enc, "b_dec": tc.b_dec}
    if tc.threshold is not None:
        d["threshold"] = tc.threshold
    if tc.w_skip is not None:
        d["affine_skip_connection"] = tc.w_skip
    save_file({k: v.contiguous() for k, v in d.items()}, str(out / "params.safetensors"))
    cfg = (tc.meta or {}).get("config")
    if isinstance(cfg, dict):
        (out / "config.json").write_text(json.dumps(cfg, indent=1))
    return out


def load_transcoder(path: str | os.PathLike) -> Transcoder:
    """A transcoder from a Gemma Scope 2 directory (params.safetensors / params.npz [+ config.json]) or one file."""
    p = Path(path)
    if p.is_dir():
        cand = [p / "params.safetensors", p / "params.npz"]
        f = next((c for c in cand if c.is_file()), None)
        if f is None:
            raise LabError(f"no transcoder found in {p} (expected params.safetensors or params.npz)")
    elif p.is_file():
        f = p
    else:
        raise LabError(f"transcoder not found: {p}")
    meta: dict[str, Any] = {}
    if f.suffix == ".npz":
        import numpy as np

        with np.load(f) as z:
            d: dict[str, Any] = {k: torch.from_numpy(z[k]) for k in z.files}
    else:
        from safetensors import safe_open

        with safe_open(str(f), "pt") as s:
            d = {k: s.get_tensor(k) for k in s.keys()}
            meta = json.loads((s.metadata() or {}).get("meta", "{}"))
    cfg = f.parent / "config.json"
    if cfg.is_file():
        meta = {"config": json.loads(cfg.read_text())} | meta
    d = _canonical(d)
    missing = [k for k in ("w_enc", "w_dec", "b_enc", "b_dec") if k not in d]
    if missing:
        raise LabError(f"transcoder file {f} lacks {', '.join(missing)} (has: {', '.join(sorted(d))})")
    return Transcoder.from_dict(d | {"meta": meta})
