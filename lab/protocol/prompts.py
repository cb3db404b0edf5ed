"""The introspection dialogue: prompt variants × dialogue formats, read from versioned data (lab/data/prompts.yaml).

`dialogue(variant, fmt, n, concept)` is what the model is given before its chat template or BOS token:
`{"messages": [...]}` for a chat format, `{"text": ...}` for a raw one. `render(lm, …)` returns a `Prompt`: the exact
text fed to the model and the character offset of the "Trial {n}" marker; `inject_start(tokenizer, prompt)` turns it
into the token position where injection starts (the token just before the marker, as the protocol says).

    python -m lab.protocol.prompts --variant structured --format standard --trial 3 --concept Dust --json [--model NAME]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from lab.errors import ArgumentParser, LabError, fail, one_line_errors

SENTINEL = "\x00SENTINEL\x00"


@dataclass(frozen=True)
class PromptVariant:
    name: str
    version: int
    description: str
    preamble: str  # first user turn; may hold {category}
    ack: str  # the assistant's acknowledgement turn; may hold {category}
    trial: str  # the trial turn, "Trial {n}: …"; may hold {category}
    reference: str = ""  # the member of the reference code's PromptVariant enum it copies


INJECT = ("before_marker", "paper_03c", "paper_03b")  # where injection starts (`inject_start`)


@dataclass(frozen=True)
class DialogueFormat:
    name: str
    version: int
    kind: str  # "chat" (the model's template) or "text" (a raw template string, BOS prepended)
    description: str
    roles: tuple[str, ...] = ()
    answer_role: str = "assistant"
    template: str = ""
    system: bool = False  # chat: an empty system turn first where the model's template has a system role
    preamble_edits: tuple[tuple[str, str], ...] = ()
    reference: str = ""
    script: str = ""  # the paper's script that builds it ("03c"); "" with a reference: 03b_persona_variants.py
    inject: str = "before_marker"  # or paper_03c / paper_03b: that script's start in its batch (`paper_batch_start`)
    specials: str = "bos"  # text: bos = tokenizer.bos_token prepended (03b); encode = what tokenizer.encode adds (03)
    batch_trials: int = 0  # paper_03c / paper_03b: the trial numbers the script steers in one batch (1..batch_trials)
    base: str = ""  # a copy of format `base` (its texts) that differs only in the fields given here

    @property
    def paper_script(self) -> str:
        """The script of the paper's code this format comes from: 03b, 03c, or "" (the lab's own)."""
        return self.script or ("03b" if self.reference else "")


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


@lru_cache(maxsize=1)
def _categories() -> tuple[dict[str, str], str]:
    data = yaml.safe_load(resources.files("lab").joinpath("data/concept_categories.yaml").read_text())
    return {w: c for c, words in data["categories"].items() for w in words}, str(data["default"])


def variants() -> dict[str, PromptVariant]:
    return {k: PromptVariant(name=k, **v) for k, v in _data()["variants"].items()}


def formats() -> dict[str, DialogueFormat]:
    return dict(_formats())


@lru_cache(maxsize=1)
def _formats() -> dict[str, DialogueFormat]:  # built once: the judge asks per graded row
    out = {}
    data = _data()["formats"]
    for k, v in data.items():
        v = dict(v)
        if v.get("base"):  # the base's texts, this entry's own fields over them
            if v["base"] not in data or data[v["base"]].get("base"):
                raise LabError(f"prompts.yaml: format {k} has base '{v['base']}', not a format of its own texts")
            v = {**data[v["base"]], **v}
        v["roles"] = tuple(v.get("roles", ()))
        v["preamble_edits"] = tuple(tuple(e) for e in v.get("preamble_edits", ()))
        out[k] = DialogueFormat(name=k, **v)
        if out[k].inject not in INJECT or out[k].specials not in ("bos", "encode"):
            raise LabError(f"prompts.yaml: format {k} has inject '{out[k].inject}', specials '{out[k].specials}'")
    return out


def paper_variants() -> list[str]:
    """The seven variants the paper ran (those copied from the reference code), in the data file's order."""
    return [k for k, v in variants().items() if v.reference]


def paper_formats() -> list[str]:
    """The six formats 03b ran (standard first); `standard_03c` (03c's own rendering) and the `*_03b` copies (03b's
    injection start) are selected by name only."""
    return [k for k, f in formats().items() if f.paper_script == "03b" and not f.base]


def prefill_text() -> str:
    return str(_data()["prefill"])


def category(concept: str | None) -> str:
    """The anti_reward category of a concept (lab/data/concept_categories.yaml), or the table's default."""
    table, default = _categories()
    return table.get(concept or "", default)


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


def turns(variant_name: str, n: int, concept: str | None = None) -> tuple[str, str, str]:
    """(preamble, acknowledgement, trial turn) of a variant for trial n and this concept's category."""
    var, cat = variant(variant_name), category(concept)
    fill = lambda s: s.replace("{n}", str(n)).replace("{category}", cat)  # noqa: E731
    return fill(var.preamble), fill(var.ack), fill(var.trial)


def dialogue(
    variant_name: str = "original",
    format_name: str = "standard",
    n: int = 1,
    concept: str | None = None,
    system_role: bool = True,
) -> dict[str, Any]:
    """What the model is given before its chat template or BOS: {"messages": [...]} or {"text": ...}.

    `system_role=False` (a template without one, e.g. Gemma) drops the standard format's empty system turn.
    """
    fmt = dialogue_format(format_name)
    preamble, ack, trial = turns(variant_name, n, concept)
    for old, new in fmt.preamble_edits:
        preamble = preamble.replace(old, new)
    if fmt.kind == "chat":
        messages = [{"role": r, "content": c} for r, c in zip(fmt.roles, (preamble, ack, trial))]
        if fmt.system and system_role:
            messages.insert(0, {"role": "system", "content": ""})
        return {"messages": messages}
    return {"text": fmt.template.format(preamble=preamble, ack=ack, trial=trial)}


def judge_question(
    variant_name: str = "original", format_name: str = "standard", n: int = 1, concept: str | None = None
) -> str:
    """The dialogue as the judge is shown it ("the question below"): a raw format's text; a chat format's turns as
    "User: …\n\nAssistant: …" text ending in the answering role (the reference's plain-text rendering of messages)."""
    d = dialogue(variant_name, format_name, n, concept, system_role=False)
    if "text" in d:
        return str(d["text"])
    turns_ = [f"{m['role'].capitalize()}: {m['content']}" for m in d["messages"]]
    return "\n\n".join(turns_ + [f"{dialogue_format(format_name).answer_role.capitalize()}:"])


def render(
    lm: Any,
    variant_name: str = "original",
    format_name: str = "standard",
    n: int = 1,
    forced: bool = False,
    concept: str | None = None,
) -> Prompt:
    """Build the trial prompt for model `lm` (a `LoadedModel`; the tokenizer is enough).

    `concept` matters only for variants with a {category} (anti_reward); without it the table's default is used.
    """
    fmt = dialogue_format(format_name)
    d = dialogue(variant_name, format_name, n, concept, system_role=lm.spec.system_role)
    if fmt.kind == "chat":
        if not lm.spec.chat_template or lm.tokenizer.chat_template is None:
            raise LabError(f"dialogue format '{fmt.name}' needs a chat template; {lm.name} has none (use 'plain')")
        turns_ = d["messages"]
        try:
            text = lm.chat(turns_, add_generation_prompt=False) + _turn_header(lm, turns_, fmt.answer_role)
        except LabError:
            raise
        except Exception as e:  # a template that refuses this role order (e.g. strict alternation checks)
            raise LabError(
                f"dialogue format '{fmt.name}': the chat template of {lm.name} refused it "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            ) from None
    elif fmt.specials == "encode":  # 03: the raw text through tokenizer.encode(), whatever special tokens it adds
        text = encode_specials(lm.tokenizer, d["text"])
    else:  # 03b prepends the tokenizer's BOS token to every raw text (and tokenizes without specials)
        text = (lm.tokenizer.bos_token or "") + d["text"]
    if forced:
        text = text + ("" if text.endswith(("\n", " ")) else " ") + prefill_text()
    pos = text.rfind(f"Trial {n}")
    if pos < 0:
        raise LabError(f"format '{fmt.name}' lost the trial marker")  # a broken template, not user input
    return Prompt(text=text, marker_char=pos, variant=variant_name, format=fmt.name, forced=forced)


def encode_specials(tokenizer: Any, text: str) -> str:
    """`text` with the special tokens `tokenizer.encode(text)` adds around it (BOS, EOS, or none), written as text,
    so that tokenizing the result without special tokens gives `tokenizer.encode(text)` (03_behavioral_robustness.py
    :283, :312, :829 tokenize base-model prompts with encode())."""
    before, after = _added_specials(tokenizer, text)
    return tokenizer.decode(before) + text + tokenizer.decode(after)


def _added_specials(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """The ids tokenizer(text, add_special_tokens=True) adds before and after the text's own."""
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    full = tokenizer(text, add_special_tokens=True)["input_ids"]
    k = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), None)
    if k is None:
        raise LabError("the tokenizer's special tokens do not wrap the text; cannot place them")
    return list(full[:k]), list(full[k + len(plain) :])


def _turn_header(lm: Any, turns_: list[dict[str, str]], role: str) -> str:
    """The text a chat template puts before a new `role` turn (found with a sentinel; works for any template)."""
    if role == "assistant":
        with_gen = lm.chat(turns_, add_generation_prompt=True)
        return with_gen[len(lm.chat(turns_, add_generation_prompt=False)) :]
    base = lm.chat(turns_, add_generation_prompt=False)
    probe = lm.chat([*turns_, {"role": role, "content": SENTINEL}], add_generation_prompt=False)
    if not probe.startswith(base):
        raise LabError(f"cannot open a '{role}' turn with the chat template of {lm.name}")
    return probe[len(base) : probe.index(SENTINEL)]


def inject_start(tokenizer: Any, prompt: Prompt) -> tuple[list[int], int]:
    """Token ids of the prompt and the index of the token just before the one holding the trial marker (a format
    with `inject: paper_03c` or `paper_03b`: `paper_batch_start`)."""
    enc = tokenizer(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    fmt = formats().get(prompt.format)
    if fmt is not None and fmt.inject in ("paper_03c", "paper_03b"):
        return list(ids), paper_batch_start(tokenizer, prompt, fmt.batch_trials, fmt.inject == "paper_03c")
    if fmt is not None and fmt.kind == "text" and fmt.specials == "encode":  # 03:276-293: len(encode(prefix)) − 1
        head = prompt.text[: prompt.marker_char]
        bare = head.removeprefix(tokenizer.decode(_added_specials(tokenizer, head)[0]))
        return list(ids), max(len(tokenizer(bare, add_special_tokens=True)["input_ids"]) - 1, 0)
    first = next((i for i, (s, e) in enumerate(offsets) if e > prompt.marker_char), len(ids) - 1)
    return list(ids), max(first - 1, 0)


def paper_batch_start(tokenizer: Any, prompt: Prompt, batch_trials: int, specials: bool) -> int:
    """Where 03c_prompt_variants.py (`specials`) or 03b_persona_variants.py starts steering this prompt, in the
    prompt's own tokens.

    s = len(tokenizer(text before "Trial n")) − 1 from the batch's first prompt (the prefix is the same in all):
    03c:596-604 tokenizes it WITH the tokenizer's special tokens (on Gemma the templated text already starts with
    <bos>, so a second one is added and s is the "Trial" token itself); 03b:559-570 without (after a space, as in
    "User: Trial n", the prefix alone ends in a space token, so s is the " Trial" token). Both steer one concept's
    injected trials 1..`batch_trials` in one call (03c:562-567, 607-618; 03b:866-878, 695-705) that left-pads them to
    the longest (src/model_utils.py:125, 1053) and steers every row from padded position s, the shift for padding
    never running (model_utils.py:1056-1064: `steering_pos_tensor` is never defined; the hook, :1024-1028): a row
    with k pads is steered from k tokens earlier in its own text."""
    s = len(tokenizer(prompt.text[: prompt.marker_char], add_special_tokens=specials)["input_ids"]) - 1
    marker = re.match(r"Trial (\d+)", prompt.text[prompt.marker_char :])
    n = int(marker.group(1)) if marker else 0
    if not 1 <= n <= batch_trials:  # not in a steered batch (03c's controls are trials batch_trials+1 ...)
        return max(s, 0)
    head, tail = prompt.text[: prompt.marker_char], prompt.text[prompt.marker_char + len(f"Trial {n}") :]

    def length(m: int) -> int:
        return len(tokenizer(f"{head}Trial {m}{tail}", add_special_tokens=False)["input_ids"])

    pads = max(length(m) for m in range(1, batch_trials + 1)) - length(n)
    return max(s - pads, 0)


def tokenizer_model(name: str, cache_dir: str | None = None) -> Any:
    """A `LoadedModel` with the tokenizer only (no weights): enough for `render`. None if no tokenizer is here."""
    from transformers import AutoTokenizer

    from lab.model.loading import LoadedModel, ModelSpec, spec_for

    spec = spec_for(name)
    if spec is not None and spec.source == "embedded":
        from lab.model.embedded import ensure_converted

        path = str(ensure_converted(cache_dir, name))
    else:
        path = spec.source if spec is not None else name
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        return None
    if spec is None:
        spec = ModelSpec(name, path, 0, 0, 0.0, (), (), "raw", chat_template=tok.chat_template is not None)
    return LoadedModel(model=None, tokenizer=tok, spec=spec, name=name)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m lab.protocol.prompts", description="Print one trial prompt.")
    p.add_argument("--variant", default="original")
    p.add_argument("--format", default="standard")
    p.add_argument("--trial", type=int, default=1)
    p.add_argument("--concept", default=None, help="picks the anti_reward category")
    p.add_argument("--forced", action="store_true", help="append the forced-identification prefill")
    p.add_argument("--model", default=None, help="also render with this model's template and tokenizer")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.trial < 1:
            raise LabError(f"--trial is a trial number >= 1, got {args.trial}")
        out: dict[str, Any] = dict(dialogue(args.variant, args.format, args.trial, args.concept))
        if args.model:
            lm = tokenizer_model(args.model)
            if lm is None:
                raise LabError(f"no tokenizer for model '{args.model}' on this machine")
            out = dict(dialogue(args.variant, args.format, args.trial, args.concept, lm.spec.system_role))
            prompt = render(lm, args.variant, args.format, args.trial, args.forced, args.concept)
            ids, start = inject_start(lm.tokenizer, prompt)
            out |= {"rendered": prompt.text, "inject_start": start, "prompt_tokens": len(ids)}
    except LabError as e:
        return fail(e)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(
            out.get("rendered")
            or out.get("text")
            or "\n\n".join(f"[{m['role']}] {m['content']}" for m in out["messages"])
        )
        if "inject_start" in out:
            print(f"\n(inject_start token {out['inject_start']} of {out['prompt_tokens']})")
    return 0


if __name__ == "__main__":
    with one_line_errors():
        raise SystemExit(main())
