"""Named sites of a decoder-only transformer (TransformerLens wording, 0-based block index L): `embed`,
`resid_post.L`, `attn_out.L`, `mlp_in.L`, `mlp_out.L`, resolved to the module whose output (or, for `mlp_in`,
input) they are.

`attn_out.L` and `mlp_out.L` are what the sublayer *adds to the residual stream*, so that resid_post.L =
resid_post.(L−1) + attn_out.L + mlp_out.L on every architecture (embed for L = 0). On Llama, Qwen3 and Qwen3-MoE that
is the attention module's output (o_proj) and the MLP's output (down_proj, or the MoE block's weighted sum of
experts); on blocks that normalise each sublayer's output before adding it (Gemma 2/3, OLMo 2/3: `post_norms`) it is
the output of that post-sublayer norm, as TransformerLens's hook_attn_out / hook_mlp_out are. `mlp_in.L` is what the
MLP reads: after the block's pre-MLP norm where it has one (`pre_mlp_norm`; OLMo 2/3 have none, their MLP reads the
residual itself). The architecture matrix (tests/lab/architectures/test_sites_and_operators.py) checks all of this
on every architecture class the registry names."""

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
        post = post_norms(block)
        if post is not None and self.kind != "mlp_in":
            return post[0] if self.kind == "attn_out" else post[1]
        name = "self_attn" if self.kind == "attn_out" else "mlp"
        if not hasattr(block, name):
            raise LabError(f"site {self}: block {self.layer} of {type(block).__name__} has no '{name}' module")
        return getattr(block, name)


def post_norms(block: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(post-attention norm, post-MLP norm) of a block that normalises each sublayer's output before adding it to
    the residual (Gemma 2/3, OLMo 2/3: they have a `post_feedforward_layernorm`), else None. (Llama's
    `post_attention_layernorm` is its pre-MLP norm: the name alone does not say which kind a block is.)"""
    if hasattr(block, "post_feedforward_layernorm") and hasattr(block, "post_attention_layernorm"):
        return block.post_attention_layernorm, block.post_feedforward_layernorm
    return None


def pre_mlp_norm(block: torch.nn.Module) -> torch.nn.Module | None:
    """The norm between the residual and the MLP's input (Gemma: pre_feedforward_layernorm; Llama, Qwen3:
    post_attention_layernorm), or None where the MLP reads the residual itself (OLMo 2/3)."""
    if hasattr(block, "pre_feedforward_layernorm"):
        return block.pre_feedforward_layernorm
    if post_norms(block) is not None:
        return None
    return getattr(block, "post_attention_layernorm", None)


def output_tensor(output: Any) -> torch.Tensor:
    # transformers 5 decoder layers return a tensor; attention modules (and older layers) a tuple
    return output[0] if isinstance(output, tuple) else output


def replace_output(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
