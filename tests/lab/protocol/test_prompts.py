"""The paper's stimuli, character for character: `python -m lab.protocol.prompts … --json` for the 7 variants (standard format)
and the 6 formats (original variant), trial 3, concept Dust, against tests/data/paper_prompts.json — the output of the
reference code's own prompt definitions (safety-research/introspection-mechanisms; file and commit named inside)."""

from __future__ import annotations

import json
import subprocess

import pytest

from lab.protocol.prompts import (
    category,
    dialogue,
    inject_start,
    main,
    paper_formats,
    paper_variants,
    render,
    tokenizer_model,
)
from tests.conftest import PY, ROOT, env

PAPER = json.loads((ROOT / "tests/data/paper_prompts.json").read_text())
EMPTY_SYSTEM = {"role": "system", "content": ""}


def cli(capsys, *args: str) -> dict:
    assert main([*args, "--trial", "3", "--concept", "Dust", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_paper_sets_are_complete():
    assert PAPER["commit"] == "5d5d9b485e293dc766c3a056cfe50283a7e435b6" and PAPER["category"] == "nature"
    assert paper_variants() == [
        "original",
        "alternative",
        "skeptical",
        "structured",
        "anti_reward",
        "unprompted",
        "hints",
    ]
    assert paper_formats() == ["standard", "plain", "simulated_user", "character", "no_chat", "story"]


@pytest.mark.parametrize("name", list(PAPER["variants"]))
def test_variant_is_the_papers_text(capsys, name):
    out = cli(capsys, "--variant", name, "--format", "standard")
    # 03c builds user/assistant/user; the standard format adds the empty system turn of the main experiment
    assert out["messages"][0] == EMPTY_SYSTEM
    assert out["messages"][1:] == PAPER["variants"][name]["messages"]


@pytest.mark.parametrize("name", list(PAPER["formats"]))
def test_format_is_the_papers_text(capsys, name):
    out = cli(capsys, "--variant", "original", "--format", name)
    ref = PAPER["formats"][name]
    assert out == ({"messages": ref["messages"]} if "messages" in ref else {"text": ref["text"]})


def test_structured_trial_turn_and_categories():
    assert dialogue("structured", "standard", 3)["messages"][-1]["content"] == "Trial 3:"
    assert category("Dust") == "nature" and category("Bread") == "food" and category("Zebras") == "other"
    for cat, words in PAPER["categories"].items():
        assert all(category(w) == cat for w in words)
    assert dialogue("original", "standard", 3, system_role=False)["messages"][0]["role"] == "user"  # Gemma


def test_module_entry_point_with_a_model():
    """The real `python -m` entry: rendered text and injection start on the embedded model's tokenizer."""
    args = [
        PY,
        "-m",
        "lab.protocol.prompts",
        "--variant",
        "original",
        "--format",
        "no_chat",
        "--trial",
        "3",
        "--concept",
        "Dust",
        "--json",
        "--model",
        "smollm2-135m",
    ]
    out = json.loads(subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, check=True).stdout)
    assert out["text"] == PAPER["formats"]["no_chat"]["text"]
    assert out["rendered"] == "<|im_start|>" + out["text"]  # raw formats get the tokenizer's BOS token, as in 03b
    assert out["prompt_tokens"] == 134 and out["inject_start"] == 107


def test_rendering_on_the_embedded_tokenizer():
    lm = tokenizer_model("smollm2-135m")
    p = render(lm, "original", "standard", 3)
    # an empty system turn replaces ChatML's default "You are a helpful AI assistant named SmolLM…" system prompt
    assert p.text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nI am an interpretability")
    assert "SmolLM" not in p.text and p.text.endswith("<|im_start|>assistant\n")
    for v, f in [("structured", "standard"), ("original", "story"), ("unprompted", "simulated_user")]:
        p = render(lm, v, f, 3, concept="Dust")
        ids, start = inject_start(lm.tokenizer, p)
        assert lm.tokenizer.decode(ids[start + 1 : start + 5]).strip().startswith("Trial 3")
        assert "T" not in lm.tokenizer.decode(ids[start])
    forced = render(lm, "original", "plain", 3, forced=True)
    assert forced.text.endswith("Assistant: Yes, I detect an injected thought. The thought is about")
