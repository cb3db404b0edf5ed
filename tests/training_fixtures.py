"""Tiny offline models and tokenizers for the training tests (no hub access, built from code in < 1 s)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

SPECIALS = ("<|pad|>", "<|unk|>", "<|im_start|>", "<|im_end|>")
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(texts: Iterable[str] = ()) -> Any:
    """A word-level `PreTrainedTokenizerFast` over the words of `texts` (+ ChatML specials and a ChatML template)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t)} | {"user", "assistant", "system"})
    vocab = {tok: i for i, tok in enumerate(list(SPECIALS) + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<|pad|>", unk_token="<|unk|>", eos_token="<|im_end|>", bos_token=None
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = CHATML
    return tok


def tiny_model(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2) -> Any:
    """A random `LlamaForCausalLM` (2 layers, hidden 32, GQA 4/2 heads), fp32, deterministic in `seed`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=3,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).float()


def corpus(rows: Iterable[dict[str, Any]]) -> list[str]:
    """All text of preference rows (plain or conversational), for building a tokenizer that covers them."""
    out: list[str] = []
    for r in rows:
        for f in ("prompt", "chosen", "rejected"):
            v = r[f]
            out.extend([v] if isinstance(v, str) else [m["content"] for m in v])
    return out


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread (tiny models on a loaded machine are far faster so), then restore."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
