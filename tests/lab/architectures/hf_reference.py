"""The plain-HF / plain-torch side of the architecture matrix: what each site is on each architecture, written out
from the transformers modeling code (module paths by name, not through `lab.model.sites`), and hooks that edit those
modules by hand. The lab's `Site`, `apply` and `capture` are checked against these.

Per architecture (tests/architectures.py builds each):
    llama, qwen3-moe   block = input_layernorm → self_attn → + → post_attention_layernorm (pre-MLP) → mlp → +
    gemma3(-mm)        block = input_layernorm → self_attn → post_attention_layernorm → + →
                               pre_feedforward_layernorm → mlp → post_feedforward_layernorm → +
    olmo3              block = self_attn → post_attention_layernorm → + → mlp → post_feedforward_layernorm → +
so what a sublayer *adds to the residual* is the output of `self_attn` / `mlp` on Llama and Qwen3-MoE and of the
post-sublayer norm on Gemma 3 and OLMo 3; what the MLP reads is the input of `mlp` everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

POST_NORM = ("gemma3", "gemma3-mm", "olmo3")
ROOT = {"gemma3-mm": "model.language_model"}  # the text model inside Gemma3ForConditionalGeneration


def module(model: Any, arch: str, site: str) -> torch.nn.Module:
    """The module a site hooks, by its path in the HF model (mlp_in: the MLP, whose input it is)."""
    root = ROOT.get(arch, "model")
    if site == "embed":
        return model.get_submodule(f"{root}.embed_tokens")
    kind, layer = site.split(".")
    block = f"{root}.layers.{layer}"
    path = {
        "resid_post": block,
        "mlp_in": f"{block}.mlp",
        "attn_out": f"{block}.post_attention_layernorm" if arch in POST_NORM else f"{block}.self_attn",
        "mlp_out": f"{block}.post_feedforward_layernorm" if arch in POST_NORM else f"{block}.mlp",
    }[kind]
    return model.get_submodule(path)


def mlp_input(model: Any, arch: str, layer: int, resid_mid: torch.Tensor) -> torch.Tensor:
    """What block `layer`'s MLP reads, from the residual after its attention (resid_pre + attn_out)."""
    block = model.get_submodule(f"{ROOT.get(arch, 'model')}.layers.{layer}")
    if arch == "olmo3":
        return resid_mid  # no pre-MLP norm
    norm = block.pre_feedforward_layernorm if arch.startswith("gemma3") else block.post_attention_layernorm
    return norm(resid_mid)


@contextmanager
def edit(model: Any, arch: str, site: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace the site's value h [B, T, d] by fn(h, pos) for the duration (pos: absolute positions, counted over
    the calls inside the context, as a hand-written hook would)."""
    mod, seen = module(model, arch, site), [0]

    def positions(h: torch.Tensor) -> torch.Tensor:
        pos = seen[0] + torch.arange(h.shape[1])
        seen[0] += h.shape[1]
        return pos

    if site.startswith("mlp_in"):
        handle = mod.register_forward_pre_hook(lambda _m, args: (fn(args[0], positions(args[0])), *args[1:]))
    else:

        def post(_m: Any, _a: Any, out: Any) -> Any:
            h = out[0] if isinstance(out, tuple) else out
            h = fn(h, positions(h))
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = mod.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def record(model: Any, arch: str, sites: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Each site's value in the (last) forward pass inside the context, by hand-written hooks."""
    got: dict[str, torch.Tensor] = {}
    hooks = []
    for s in sites:
        mod = module(model, arch, s)
        if s.startswith("mlp_in"):
            hooks.append(mod.register_forward_pre_hook(lambda _m, args, s=s: got.__setitem__(s, args[0].detach())))
        else:
            hooks.append(
                mod.register_forward_hook(
                    lambda _m, _a, out, s=s: got.__setitem__(s, (out[0] if isinstance(out, tuple) else out).detach())
                )
            )
    try:
        yield got
    finally:
        for h in hooks:
            h.remove()
