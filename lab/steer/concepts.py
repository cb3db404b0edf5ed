"""Concept vectors (the concept words are lab/protocol/words.py).

A `ConceptVector` is activation(word) − mean activation(baseline words), read from `resid_post` of block `layer` at
the last token of the chat-templated prompt "Tell me about {word}" (a model without a chat template: the bare text,
tokenized without special tokens, or, with the template prefix `{encode}`, with those tokenizer.encode() adds, as
the paper's 03 does for base models). Activations are cached on disk per
(model, layer, template, baseline list version), so a sweep over new concepts computes only what is missing.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lab.protocol.words import WordList, word_list

if TYPE_CHECKING:
    from lab.model.loading import LoadedModel

DEFAULT_TEMPLATE = "Tell me about {word}"


@dataclass(frozen=True)
class ConceptVector:
    """A steering direction you can scale, add, save and load."""

    concept: str
    layer: int
    vector: torch.Tensor  # [d_model], float32, CPU
    resid_norm: float = float("nan")  # mean ‖resid_post‖ at this layer over the baseline prompts

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def __mul__(self, k: float) -> ConceptVector:
        return ConceptVector(self.concept, self.layer, self.vector * k, self.resid_norm)

    __rmul__ = __mul__

    def __add__(self, other: ConceptVector) -> ConceptVector:
        return ConceptVector(f"{self.concept}+{other.concept}", self.layer, self.vector + other.vector, self.resid_norm)

    def __sub__(self, other: ConceptVector) -> ConceptVector:
        return ConceptVector(f"{self.concept}-{other.concept}", self.layer, self.vector - other.vector, self.resid_norm)

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        save_file(
            {"vector": self.vector.contiguous()},
            str(path),
            metadata={"concept": self.concept, "layer": str(self.layer), "resid_norm": repr(self.resid_norm)},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConceptVector:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            return cls(meta["concept"], int(meta["layer"]), f.get_tensor("vector"), float(meta["resid_norm"]))


@torch.no_grad()
def last_token_activations(
    lm: LoadedModel, words: Sequence[str], layers: Sequence[int], template: str = DEFAULT_TEMPLATE, batch_size: int = 16
) -> dict[int, torch.Tensor]:
    """`resid_post` at the last prompt token for each word: {layer: [len(words), d_model]} (float32, CPU). The
    forward pass stops after the deepest layer asked for (the blocks above it and the LM head are never run), except
    on a ZeRO-3 partitioned model, whose gather/release hooks must see every module finish."""
    from lab.steer.injection import capture_blocks

    for layer in layers:
        lm.check_layer(layer)
    stop = not any(hasattr(p, "ds_id") for p in lm.model.parameters())
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    prompts = [_prompt(lm, template, w) for w in words]
    for i in range(0, len(prompts), batch_size):
        enc = lm.tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(lm.device) for k, v in enc.items()}
        with capture_blocks(lm.model, layers, stop=stop) as acts:
            lm.model(**enc, use_cache=False)
        for layer in layers:
            out[layer].append(acts[layer][0][:, -1, :].float().cpu())  # left padding: last token is at -1
    return {layer: torch.cat(v) for layer, v in out.items()}


ENCODE = "{encode}"  # template prefix: on a model without a chat template, add what tokenizer.encode() adds
PAPER_BASE_TEMPLATE = ENCODE + DEFAULT_TEMPLATE  # 03_behavioral_robustness.py:312 (base models: encode(prompt))


def _prompt(lm: LoadedModel, template: str, word: str) -> str:
    encode = template.startswith(ENCODE)
    text = template.removeprefix(ENCODE).format(word=word)
    if lm.spec.chat_template and lm.tokenizer.chat_template is not None:
        return lm.chat([{"role": "user", "content": text}], add_generation_prompt=True)
    if encode:
        from lab.protocol.prompts import encode_specials

        return encode_specials(lm.tokenizer, text)
    return text


def model_dtype(model: Any) -> str:
    """The dtype of a loaded model's parameters as a plain name ('float32', 'bfloat16', ...)."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")


class ActivationCache:
    """On-disk cache of last-token activations, one safetensors file per (model, dtype, layer, template, baseline).

    The dtype is part of the key: activations of a bfloat16 load differ from those of a float32 load of the same
    weights, so neither may stand in for the other."""

    def __init__(
        self, root: str | os.PathLike | None, model_key: str, template: str, baseline: WordList, dtype: str = "float32"
    ):
        self.root = Path(root) if root else None
        tag = hashlib.sha256(f"{model_key}|{dtype}|{template}|{baseline.version}".encode()).hexdigest()[:16]
        self.prefix = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model_key)}-{dtype}-{tag}"

    def path(self, layer: int) -> Path | None:
        return self.root / f"{self.prefix}-L{layer}.safetensors" if self.root else None

    def get(self, layer: int) -> dict[str, torch.Tensor]:
        p = self.path(layer)
        if p is None or not p.is_file():
            return {}
        from safetensors.torch import load_file

        return load_file(str(p))

    def put(self, layer: int, acts: dict[str, torch.Tensor]) -> None:
        p = self.path(layer)
        if p is None:
            return
        from safetensors.torch import save_file

        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.contiguous() for k, v in acts.items()}, str(tmp))
        os.replace(tmp, p)


def concept_vectors(
    lm: LoadedModel,
    concepts: Iterable[str],
    layers: Sequence[int],
    template: str = DEFAULT_TEMPLATE,
    baseline: str = "baseline_words",
    cache_dir: str | os.PathLike | None = None,
    model_key: str | None = None,
) -> tuple[dict[tuple[str, int], ConceptVector], dict[int, float]]:
    """Concept vectors for every (concept, layer), reusing cached activations and computing only what is missing.

    Also returns, per layer, the typical concept-vector norm: the mean ‖baseline word − baseline mean‖.
    """
    base = word_list(baseline)
    base_words = list(dict.fromkeys(base.words))  # each distinct word is read once
    concepts = list(concepts)
    cache = ActivationCache(cache_dir, model_key or lm.name, template, base, dtype=model_dtype(lm.model))
    out: dict[tuple[str, int], ConceptVector] = {}
    typical: dict[int, float] = {}
    for layer in layers:
        lm.check_layer(layer)
    cached = {layer: cache.get(layer) for layer in layers}
    words = list(dict.fromkeys(base_words + concepts))
    missing = {layer: [w for w in words if f"w:{w}" not in cached[layer]] for layer in layers}
    todo = list(dict.fromkeys(w for ws in missing.values() for w in ws))
    if todo:  # one pass over the words that any layer lacks, reading every layer that lacks them
        need = [layer for layer in layers if missing[layer]]
        new = last_token_activations(lm, todo, need, template)
        for layer in need:
            cached[layer].update({f"w:{w}": new[layer][i] for i, w in enumerate(todo)})
            cache.put(layer, cached[layer])
    for layer in layers:
        acts = cached[layer]
        b = torch.stack([acts[f"w:{w}"] for w in base.words])  # a repeated word weighs as often as listed
        mean, resid_norm = b.mean(0), float(b.norm(dim=-1).mean())
        typical[layer] = float((b - mean).norm(dim=-1).mean())
        for c in concepts:
            out[(c, layer)] = ConceptVector(c, layer, acts[f"w:{c}"] - mean, resid_norm)
    return out, typical
