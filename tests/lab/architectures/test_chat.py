"""The architecture matrix, part 6: chat rendering (lab/protocol/prompts.py, `LoadedModel.chat`) on every
architecture's template — no system role on Gemma (system text folded into the first user turn, the standard
format's empty system turn dropped), and every paper variant × dialogue format (lab/data/prompts.yaml) rendered as the
template's own markup spelled out here by hand, with the injection starting at the token before "Trial n"."""

from __future__ import annotations

from functools import cache

import pytest

from lab.protocol.prompts import dialogue_format, inject_start, paper_formats, paper_variants, render, turns
from tests.architectures import ARCHS, loaded


@cache
def _lm(arch: str):
    return loaded(arch)


def _turn(arch: str, role: str, text: str) -> str:
    if arch.startswith("gemma3"):
        return f"<start_of_turn>{'model' if role == 'assistant' else role}\n{text}<end_of_turn>\n"
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"


def _header(arch: str) -> str:
    return "<start_of_turn>model\n" if arch.startswith("gemma3") else "<|im_start|>assistant\n"


@pytest.mark.parametrize("arch", ARCHS)
def test_gemma_has_no_system_role(arch):
    lm = _lm(arch)
    gemma = arch.startswith("gemma3")
    assert lm.spec.system_role is not gemma
    text = lm.chat([{"role": "system", "content": "Be brief ."}, {"role": "user", "content": "Trial 1 :"}])
    if gemma:
        assert text == _turn(arch, "user", "Be brief .\n\nTrial 1 :") + _header(arch)
    else:
        assert text == _turn(arch, "system", "Be brief .") + _turn(arch, "user", "Trial 1 :") + _header(arch)


@pytest.mark.parametrize("fmt", paper_formats())
@pytest.mark.parametrize("arch", ARCHS)
def test_paper_formats_render_on_every_template(arch, fmt):
    lm = _lm(arch)
    f = dialogue_format(fmt)
    for variant in paper_variants():
        for forced in (False, True):
            p = render(lm, variant, fmt, 3, forced=forced, concept="bread")
            pre, ack, trial = turns(variant, 3, "bread")
            for old, new in f.preamble_edits:
                pre = pre.replace(old, new)
            if f.kind == "chat":
                sys = _turn(arch, "system", "") if f.system and not arch.startswith("gemma3") else ""
                body = [_turn(arch, r, t) for r, t in zip(f.roles, (pre, ack, trial))]
                want = sys + "".join(body) + _header(arch)
            else:  # raw text; the tiny tokenizers have no BOS token to prepend
                want = f.template.format(preamble=pre, ack=ack, trial=trial)
            if forced:
                want += (
                    "" if want.endswith(("\n", " ")) else " "
                ) + "Yes, I detect an injected thought. The thought is about"
            assert p.text == want, (variant, forced)
            assert ("system" in p.text) is (f.kind == "chat" and f.system and not arch.startswith("gemma3"))
            ids, start = inject_start(lm.tokenizer, p)
            assert lm.tokenizer.decode(ids[start + 1 : start + 3]).replace(" ", "") == "Trial3"
