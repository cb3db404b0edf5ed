"""Named sites of a decoder-only transformer (TransformerLens wording, 0-based block index L): `embed`,
`resid_post.L`, `attn_out.L`, `mlp_in.L`, `mlp_out.L`, resolved to the module whose output (or, for `mlp_in`,
input) they are."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from lab.errors import LabError
from lab.model.loading import decoder_layers

SITE_KINDS = ("embed", "resid_post", "attn_out", "mlp_in", "mlp_out")
_SITE = re.compile(r"^(embed)$|^(resid_post|attn_out|mlp_in|mlp_out)\.(\d+)$")


@dataclass(frozen=True)
class Site:
    kind: str
    layer: int | None = None

    @classmethod
    def parse(cls, name: str | Site) -> Site:
        if isinstance(name, Site):
            return name
        m = _SITE.match(name.strip())
        if not m:
            raise LabError(f"unknown site '{name}' (known: embed, resid_post.L, attn_out.L, mlp_in.L, mlp_out.L)")
        return cls("embed") if m.group(1) else cls(m.group(2), int(m.group(3)))

    def __str__(self) -> str:
        return self.kind if self.layer is None else f"{self.kind}.{self.layer}"

    def module(self, model: Any) -> torch.nn.Module:
        """The module whose output (or, for `mlp_in`, input) is this site."""
        if self.kind == "embed":
            return model.get_input_embeddings()
        blocks = decoder_layers(model)
        assert self.layer is not None
        if not 0 <= self.layer < len(blocks):
            raise LabError(f"site {self} is out of range (layers 0..{len(blocks) - 1})")
        block = blocks[self.layer]
        if self.kind == "resid_post":
            return block
        name = "self_attn" if self.kind == "attn_out" else "mlp"
        if not hasattr(block, name):
            raise LabError(f"site {self}: block {self.layer} of {type(block).__name__} has no '{name}' module")
        return getattr(block, name)


def output_tensor(output: Any) -> torch.Tensor:
    # transformers 5 decoder layers return a tensor; attention modules (and older layers) a tuple
    return output[0] if isinstance(output, tuple) else output


def replace_output(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
