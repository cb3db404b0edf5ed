"""The architecture matrix, part 4: LoRA (training/lora) on every architecture class — the modules the lab's
'all-linear' rule adapts (training/lora/targets.py: every linear layer of the decoder blocks; never the LM head, the
Gemma vision tower or projector, a MoE's routed experts or router), and one optimizer step of every registered
training condition through `training.lora.trainer.train` (TRL's DPO / SFT trainers and the lab's subclasses), with
the tiny word-level tokenizer of tests/architectures.py. The reference for the targets is the list of nn.Linear
modules written out from the HF modeling code."""

from __future__ import annotations

import re

import pytest
import torch

from tests.architectures import ARCHS, loaded
from tests.training_fixtures import corpus
from training.lora.conditions import CONDITIONS, LoraSettings, TrainHParams
from training.lora.trainer import train
from training.preference.data import to_conversational
from training.preference.synthetic import generate_pairs

ROWS = [to_conversational(r) for r in generate_pairs(4, seed=0)]
LORA = LoraSettings(r=2, alpha=4)
HP = TrainHParams(learning_rate=1e-3, gradient_accumulation_steps=1, max_length=96)
DENSE = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


def _lm(arch: str):  # the preference rows' words in the vocabulary, so the rows are not all unknown tokens
    return loaded(arch, extra=" ".join(corpus(ROWS)))


def _expected(arch: str, n: int) -> set[str]:
    root = "model.language_model.layers" if arch == "gemma3-mm" else "model.layers"
    parts = {"self_attn": DENSE["self_attn"]} if arch == "qwen3-moe" else DENSE  # MoE: attention only
    return {f"{root}.{L}.{m}.{p}" for L in range(n) for m, ps in parts.items() for p in ps}


def _adapted(peft_model) -> set[str]:
    """Names (in the base model) of the modules that carry a LoRA A matrix."""
    names = (n for n, _ in peft_model.named_parameters() if ".lora_A." in n)
    return {re.sub(r"^base_model\.model\.", "", n.split(".lora_A.")[0]) for n in names}


@pytest.mark.parametrize("arch", ARCHS)
def test_all_linear_adapts_the_decoder_blocks_only(arch):
    from peft import get_peft_model

    lm = _lm(arch)
    model = get_peft_model(lm.model, LORA.peft_config(model=lm.model))
    assert _adapted(model) == _expected(arch, lm.n_layers)
    names = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert not any(k in n for n in names for k in ("vision", "projector", "experts", "lm_head", "embed", ".gate."))
    if arch == "gemma3-mm":  # PEFT's own "all-linear" would adapt the SigLIP tower as well
        assert any("vision" in n for n, m in lm.model.named_modules() if isinstance(m, torch.nn.Linear))


# one condition per code path (objective × reference × KL × random init) on every architecture; the others differ
# from one of these only in their data (pairs swapped, the rejected answer as the SFT target), which no architecture
# sees, so they run on the paper's main model class only (and all of them on Llama in tests/training)
PATHS = ("dpo", "dpo_no_ref", "margin", "margin_kl", "sft_chosen", "sft_kl", "random_lora", "random_lora_peft")
CASES = [(a, c) for a in ARCHS for c in PATHS] + [("gemma3-mm", c) for c in sorted(CONDITIONS) if c not in PATHS]


def _path(name: str) -> tuple:
    c = CONDITIONS[name]
    return (c.objective, c.reference, c.kl_weight > 0, c.random_init)


def test_the_paths_cover_every_condition():
    assert {_path(c) for c in CONDITIONS} == {_path(c) for c in PATHS}


@pytest.mark.parametrize(("arch", "condition"), CASES)
def test_one_step_of_every_condition(arch, condition, tmp_path):
    """One optimizer step (none for the untrained random-LoRA controls): finite loss, an adapter on disk over the
    rule's modules, and the caller's model restored."""
    from peft import PeftModel

    lm = _lm(arch)
    ids = torch.tensor([lm.tokenizer("Do you detect an injected thought ?", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        before = lm.model(input_ids=ids).logits
    res = train(condition, ROWS, output_dir=tmp_path / "a", model=lm, lora=LORA, hparams=HP, max_steps=1)
    untrained = CONDITIONS[condition].objective == "none"
    assert res.metrics["train_steps"] == (0 if untrained else 1)
    assert untrained or (len(res.losses) == 1 and torch.isfinite(torch.tensor(res.losses[0][1])))
    with torch.no_grad():
        assert torch.equal(lm.model(input_ids=ids).logits, before)
        adapted = PeftModel.from_pretrained(lm.model, str(res.adapter_dir))
        assert _adapted(adapted) == _expected(arch, lm.n_layers)
