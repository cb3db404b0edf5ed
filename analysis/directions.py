"""The refusal direction per layer (Arditi et al. 2024; the paper's abliteration experiment).

direction[L] = normalise(mean act(harmful) − mean act(harmless)), where act is `resid_post.L` (the output of decoder
block L, i.e. HF `hidden_states[L + 1]`, which is what the paper's code reads) at one position of the templated
prompt: a single user turn with the generation prompt, read at `position` (−2 as in the paper's code: the token
before the last of the generation prompt; −1 = the last token). Prompts are left-padded, so negative positions index
every row alike.

Instructions ship as versioned data (lab/data/refusal_{harmful,harmless}.txt, written for this project; the paper
used 512 of each); `instructions("harmful", extra="more.txt")` appends a local file of more (one per line).
By default the last `HELDOUT` harmful lines are held out of the direction for the refusal-rate check.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from lab.errors import LabError

HELDOUT = 32
SITE = "resid_post"


def _lines(text: str) -> list[str]:
    return [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]


def instructions(kind: str, extra: str | os.PathLike | None = None) -> list[str]:
    """The shipped `harmful` or `harmless` list (or a local file path as `kind`), plus the lines of `extra`."""
    if kind in ("harmful", "harmless"):
        items = _lines(resources.files("lab").joinpath(f"data/refusal_{kind}.txt").read_text())
    elif Path(kind).is_file():
        items = _lines(Path(kind).read_text())
    else:
        raise LabError(f"unknown instruction list '{kind}' (harmful, harmless or a file path)")
    if extra:
        if not Path(extra).is_file():
            raise LabError(f"instruction file not found: {extra}")
        items += _lines(Path(extra).read_text())
    if not items:
        raise LabError(f"instruction list '{kind}' is empty")
    return list(dict.fromkeys(items))


def split_heldout(items: Sequence[str], n_heldout: int = HELDOUT) -> tuple[list[str], list[str]]:
    """(used for the direction, held out for the refusal check): the last `n_heldout` lines are held out."""
    if not 0 <= n_heldout < len(items):
        raise LabError(f"cannot hold out {n_heldout} of {len(items)} instructions")
    cut = len(items) - n_heldout
    return list(items[:cut]), list(items[cut:])


def chat_prompt(lm: Any, instruction: str) -> str:
    """A single user turn with the generation prompt, in the model's own template (raw text without one)."""
    if lm.tokenizer.chat_template is None:
        return instruction
    return lm.chat([{"role": "user", "content": instruction}], add_generation_prompt=True)


@torch.no_grad()
def instruction_activations(
    lm: Any, items: Sequence[str], position: int = -2, layers: Sequence[int] | None = None, batch_size: int = 16
) -> torch.Tensor:
    """`resid_post` of every block (or `layers`) at `position` (negative) of each templated prompt:
    [n_layers, len(items), d_model], float32, CPU."""
    from lab.steer import interventions as iv

    if position >= 0:
        raise LabError(f"position must be negative (counted from the end of the prompt), got {position}")
    layers = list(range(lm.n_layers)) if layers is None else [lm.check_layer(x) for x in layers]
    sites = [f"{SITE}.{x}" for x in layers]
    out: list[torch.Tensor] = []
    tok = lm.tokenizer
    for i in range(0, len(items), batch_size):
        enc = tok(
            [chat_prompt(lm, s) for s in items[i : i + batch_size]],
            return_tensors="pt",
            padding=True,
            add_special_tokens=lm.tokenizer.chat_template is None,
        )
        enc = {k: v.to(lm.device) for k, v in enc.items()}
        with iv.capture(lm.model, sites, stop=True) as acts:
            lm.model(**enc, use_cache=False)
        out.append(torch.stack([acts[s][0][:, position, :].float().cpu() for s in sites]))
    return torch.cat(out, dim=1)


def mean_difference(harmful: torch.Tensor, harmless: torch.Tensor) -> torch.Tensor:
    """Unit-norm mean(harmful) − mean(harmless) along the items axis: [L, N, d] → [L, d] (or [N, d] → [d])."""
    diff = harmful.float().mean(-2) - harmless.float().mean(-2)
    return diff / diff.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class RefusalDirections:
    """One unit direction per layer (row L belongs to `resid_post.L`), with how it was made."""

    directions: torch.Tensor  # [n_layers, d_model]
    position: int
    model: str
    n_harmful: int
    n_harmless: int
    instructions_version: str = ""
    site: str = SITE
    raw_norms: tuple[float, ...] = ()  # ‖mean diff‖ per layer before normalising

    def layer(self, layer: int) -> torch.Tensor:
        return self.directions[layer]

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        save_file(
            {"directions": self.directions.contiguous(), "raw_norms": torch.tensor(self.raw_norms)},
            str(tmp),
            metadata={
                "position": str(self.position),
                "model": self.model,
                "n_harmful": str(self.n_harmful),
                "n_harmless": str(self.n_harmless),
                "site": self.site,
                "instructions_version": self.instructions_version,
                "layers": str(self.directions.shape[0]),
            },
        )
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> RefusalDirections:
        from safetensors import safe_open

        if not Path(path).is_file():
            raise LabError(f"refusal directions not found: {path}")
        with safe_open(str(path), "pt") as f:
            m = f.metadata()
            raw = tuple(float(x) for x in f.get_tensor("raw_norms").tolist())
            return cls(
                f.get_tensor("directions"),
                int(m["position"]),
                m["model"],
                int(m["n_harmful"]),
                int(m["n_harmless"]),
                m.get("instructions_version", ""),
                m.get("site", SITE),
                raw,
            )


def refusal_direction(
    lm: Any, harmful: Sequence[str], harmless: Sequence[str], position: int = -2, batch_size: int = 16
) -> RefusalDirections:
    """Per-layer refusal directions of a loaded model from two instruction lists."""
    a = instruction_activations(lm, harmful, position, batch_size=batch_size)
    b = instruction_activations(lm, harmless, position, batch_size=batch_size)
    raw = (a.mean(1) - b.mean(1)).norm(dim=-1)
    version = hashlib.sha256("\n".join([*harmful, "--", *harmless]).encode()).hexdigest()[:12]
    return RefusalDirections(
        mean_difference(a, b),
        position,
        lm.name,
        len(harmful),
        len(harmless),
        version,
        raw_norms=tuple(float(x) for x in raw),
    )
