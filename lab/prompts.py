"""The introspection dialogue: prompt variants × dialogue formats, read from versioned data (lab/data/prompts.yaml).

`render(lm, variant, fmt, n, forced)` returns a `Prompt`: the exact text fed to the model and the character offset of
the "Trial {n}" marker; `inject_start(tokenizer, prompt)` turns it into the token position where injection starts
(the token just before the marker, as the protocol says).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from lab.errors import LabError

SENTINEL = "\x00SENTINEL\x00"


@dataclass(frozen=True)
class PromptVariant:
    name: str
    version: int
    description: str
    preamble: str
    question: str


@dataclass(frozen=True)
class DialogueFormat:
    name: str
    version: int
    kind: str  # "chat" (the model's template) or "text" (a plain template string)
    description: str
    roles: tuple[str, ...] = ()
    answer_role: str = "assistant"
    template: str = ""


@dataclass(frozen=True)
class Prompt:
    text: str
    marker_char: int  # offset of "Trial {n}" in text
    variant: str
    format: str
    forced: bool


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return yaml.safe_load(resources.files("lab").joinpath("data/prompts.yaml").read_text())


def variants() -> dict[str, PromptVariant]:
    return {k: PromptVariant(name=k, **v) for k, v in _data()["variants"].items()}


def formats() -> dict[str, DialogueFormat]:
    out = {}
    for k, v in _data()["formats"].items():
        v = dict(v)
        v["roles"] = tuple(v.get("roles", ()))
        out[k] = DialogueFormat(name=k, **v)
    return out


def prefill_text() -> str:
    return str(_data()["prefill"])


def variant(name: str) -> PromptVariant:
    vs = variants()
    if name not in vs:
        raise LabError(f"unknown prompt variant '{name}' (known: {', '.join(vs)})")
    return vs[name]


def dialogue_format(name: str) -> DialogueFormat:
    fs = formats()
    if name not in fs:
        raise LabError(f"unknown dialogue format '{name}' (known: {', '.join(fs)})")
    return fs[name]


def render(lm: Any, variant_name: str = "original", format_name: str = "standard", n: int = 1,
           forced: bool = False) -> Prompt:
    """Build the trial prompt for model `lm` (a `LoadedModel`)."""
    var, fmt = variant(variant_name), dialogue_format(format_name)
    marker = f"Trial {n}: "
    trial = marker + var.question
    ack = str(_data()["ack"])
    if fmt.kind == "chat":
        if not lm.spec.chat_template or lm.tokenizer.chat_template is None:
            raise LabError(f"dialogue format '{fmt.name}' needs a chat template; {lm.name} has none (use 'plain')")
        turns = [{"role": r, "content": c} for r, c in zip(fmt.roles, (var.preamble, ack, trial))]
        try:
            text = lm.chat(turns, add_generation_prompt=False) + _turn_header(lm, turns, fmt.answer_role)
        except LabError:
            raise
        except Exception as e:  # a template that refuses this role order (e.g. strict alternation checks)
            raise LabError(f"dialogue format '{fmt.name}': the chat template of {lm.name} refused it "
                           f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    else:
        bos = lm.tokenizer.bos_token if getattr(lm.tokenizer, "add_bos_token", False) else None
        text = (bos or "") + fmt.template.format(preamble=var.preamble, ack=ack, trial=trial)
    if forced:
        text = text + ("" if text.endswith(("\n", " ")) else " ") + prefill_text()
    pos = text.rfind(marker)
    if pos < 0:
        raise LabError(f"format '{fmt.name}' lost the trial marker")  # a broken template, not user input
    return Prompt(text=text, marker_char=pos, variant=var.name, format=fmt.name, forced=forced)


def _turn_header(lm: Any, turns: list[dict[str, str]], role: str) -> str:
    """The text a chat template puts before a new `role` turn (found with a sentinel; works for any template)."""
    if role == "assistant":
        with_gen = lm.chat(turns, add_generation_prompt=True)
        return with_gen[len(lm.chat(turns, add_generation_prompt=False)):]
    base = lm.chat(turns, add_generation_prompt=False)
    probe = lm.chat([*turns, {"role": role, "content": SENTINEL}], add_generation_prompt=False)
    if not probe.startswith(base):
        raise LabError(f"cannot open a '{role}' turn with the chat template of {lm.name}")
    return probe[len(base):probe.index(SENTINEL)]


def inject_start(tokenizer: Any, prompt: Prompt) -> tuple[list[int], int]:
    """Token ids of the prompt and the index of the token just before the one holding the trial marker."""
    enc = tokenizer(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    first = next((i for i, (s, e) in enumerate(offsets) if e > prompt.marker_char), len(ids) - 1)
    return list(ids), max(first - 1, 0)
