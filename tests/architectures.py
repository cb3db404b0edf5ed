"""Tiny random-weight instances of every architecture class the lab's registry names, with the real model's layer
pattern: the architecture matrix (tests/lab/architectures/) builds its models here, and a new architecture joins the
lab by joining `ARCHS`.

    llama       LlamaForCausalLM                  SmolLM2 (the embedded model)
    gemma3      Gemma3ForCausalLM                 Gemma 3 270M (the second embedded model): 5 sliding : 1 global,
                                                  norms after each sublayer, scaled embeddings, tied head
    gemma3-mm   Gemma3ForConditionalGeneration   gemma-3-27b-it (the paper's main model): the same text model inside
                                                  the multimodal wrapper, with a (tiny) SigLIP vision tower
    olmo3       Olmo3ForCausalLM                  OLMo-3.1-32B stages: 3 sliding : 1 global, post-norms only
    qwen3-moe   Qwen3MoeForCausalLM               Qwen3-235B-A22B: a mixture of experts in every layer

Sliding windows are `WINDOW` tokens, so a prompt of a few dozen tokens is already longer than the window; vocabularies
cover a small word-level tokenizer (`tokenizer(arch)`), with the model family's chat format.
"""

from __future__ import annotations

from typing import Any

from tests.training_fixtures import tiny_tokenizer

ARCHS = ("llama", "gemma3", "gemma3-mm", "olmo3", "qwen3-moe")
SLIDING = ("gemma3", "gemma3-mm", "olmo3")
WINDOW = 8
HIDDEN = 32

GEMMA_CHAT = (  # the Gemma 3 template's shape: no system role (system text folded into the first user turn)
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{% set r = 'model' %}{% else %}{% set r = m['role'] %}"
    "{% endif %}<start_of_turn>{{ r }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
WORDS = (
    "Do you detect an injected thought ? If so , what is it about ? Yes I No not sure the a bread ocean fire music "
    "dog cat tree river mountain cloud apple house water light stone glass paper silver garden winter summer "
    "Trial 1 2 3 : . model user assistant system start_of_turn end_of_turn I am an interpretability researcher "
    "studying transformer based language models like you have access to internals neural network identified "
    "patterns in your activity that correspond concepts and capable of injecting these into mind want assess how "
    "well can them will inject on 50 % trials other half control"
)


def tokenizer(arch: str, extra: str = "") -> Any:
    """A word-level tokenizer over `WORDS` (and the words of `extra`) with the family's chat template (ChatML;
    Gemma's turn markup)."""
    tok = tiny_tokenizer([WORDS, extra])
    if arch.startswith("gemma3"):
        tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
        tok.chat_template = GEMMA_CHAT
    return tok


def config(arch: str, vocab_size: int, layers: int | None = None) -> Any:
    """The HF config of a tiny `arch` (d 32, 4 heads / 2 KV heads, sliding window `WINDOW`)."""
    import transformers as tf

    common = dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=3,
        bos_token_id=None,
    )
    if arch == "llama":
        return tf.LlamaConfig(num_hidden_layers=layers or 4, tie_word_embeddings=True, **common)
    if arch in ("gemma3", "gemma3-mm"):
        n = layers or 6  # five sliding layers to one global, as in every Gemma 3
        text = tf.Gemma3TextConfig(
            num_hidden_layers=n,
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=WINDOW,
            layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)],
            **common,
        )
        if arch == "gemma3":
            return text
        vision = tf.SiglipVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        )
        return tf.Gemma3Config(
            text_config=text.to_dict(),
            vision_config=vision.to_dict(),
            mm_tokens_per_image=4,
            image_token_index=vocab_size - 1,
            boi_token_index=vocab_size - 2,
            eoi_token_index=vocab_size - 3,
            pad_token_id=0,
            eos_token_id=3,
        )
    if arch == "olmo3":
        n = layers or 4  # three sliding layers to one global
        return tf.Olmo3Config(
            num_hidden_layers=n,
            sliding_window=WINDOW,
            layer_types=["full_attention" if (i + 1) % 4 == 0 else "sliding_attention" for i in range(n)],
            **common,
        )
    if arch == "qwen3-moe":
        return tf.Qwen3MoeConfig(
            num_hidden_layers=layers or 4,
            head_dim=8,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=HIDDEN,
            decoder_sparse_step=1,
            norm_topk_prob=True,
            **common,
        )
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")


def model(arch: str, vocab_size: int, seed: int = 0, layers: int | None = None) -> Any:
    """A random-weight fp32 instance of `arch` in eval mode, deterministic in `seed`."""
    import torch
    import transformers as tf

    cls = {
        "llama": tf.LlamaForCausalLM,
        "gemma3": tf.Gemma3ForCausalLM,
        "gemma3-mm": tf.Gemma3ForConditionalGeneration,
        "olmo3": tf.Olmo3ForCausalLM,
        "qwen3-moe": tf.Qwen3MoeForCausalLM,
    }[arch]
    torch.manual_seed(seed)
    m = cls(config(arch, vocab_size, layers)).float().eval()
    if arch.startswith("gemma3"):  # random norms near zero would make every layer the identity: perturb them
        with torch.no_grad():
            for name, p in m.named_parameters():
                if "norm" in name:
                    p.normal_(0.0, 0.5)
    return m


def loaded(arch: str, seed: int = 0, layers: int | None = None, extra: str = "") -> Any:
    """A `LoadedModel` (model + tokenizer + spec) of a tiny `arch`, as `lab.model.loading.load` would return one;
    `extra`: more words for the vocabulary (e.g. a word list the lab reads, so that its words are not all unknown)."""
    from lab.model.loading import LoadedModel, ModelSpec

    tok = tokenizer(arch, extra)
    tok.padding_side = "left"
    m = model(arch, vocab_size=len(tok) + 3, seed=seed, layers=layers)
    n = len(_layers(m))
    spec = ModelSpec(
        f"tiny-{arch}",
        "test",
        n,
        HIDDEN,
        0.0,
        (n // 2,),
        (0.5, 1.0),
        "relative",
        system_role=not arch.startswith("gemma3"),
        sampling="plain",
    )
    return LoadedModel(m, tok, spec, spec.name)


def _layers(m: Any) -> Any:
    from lab.model.loading import decoder_layers

    return decoder_layers(m)
