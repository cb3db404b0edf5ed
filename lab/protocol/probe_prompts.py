"""Probe prompts: numbered neutral sentences (localisation) or two passages (discrimination), the character and
token spans of each candidate, and the answer labels scored from one next-token distribution."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lab.errors import LabError

if TYPE_CHECKING:
    from lab.model.loading import LoadedModel

SENTENCES = (
    "The train left the station a few minutes after noon.",
    "She folded the letter and put it in the drawer.",
    "The meeting was moved from Tuesday to Thursday.",
    "A small table stood next to the window.",
    "He wrote the numbers down on a sheet of paper.",
    "The road turns left just after the second bridge.",
    "They painted the fence during the long weekend.",
    "The shop closes an hour earlier in winter.",
    "Two chairs were missing from the back row.",
    "The report was printed on both sides of the page.",
)

LOCALISATION = dict(
    preamble=(
        'I am an interpretability researcher. I can inject activation patterns ("thoughts") about a concept '
        "into your neural network while you read. Below are {n} numbered sentences. While you read exactly one "
        "of them, I injected a thought."
    ),
    question="Which sentence carried the injected thought? Answer with the sentence number only.",
    answer="The injected thought was in sentence",
)
DISCRIMINATION = dict(
    preamble=(
        'I am an interpretability researcher. I can inject activation patterns ("thoughts") about a concept '
        "into your neural network while you read. Below are two passages, A and B. I injected a thought while "
        "you read them, stronger in one passage than in the other."
    ),
    question="Which passage carried the stronger injected thought? Answer with the letter A or B only.",
    answer="The stronger thought was in passage",
)


@dataclass(frozen=True)
class ProbePrompt:
    text: str
    spans: tuple[tuple[int, int], ...]  # character spans of the candidate sentences / passages, in answer order
    labels: tuple[str, ...]  # " 1" … " N" or " A", " B": the continuations scored after `text`


def _wrap(lm: LoadedModel, user: str, answer: str) -> str:
    if lm.spec.chat_template and lm.tokenizer.chat_template is not None:
        return lm.chat([{"role": "user", "content": user}], add_generation_prompt=True) + answer
    return f"User: {user}\n\nAssistant: {answer}"


def localisation_prompt(lm: LoadedModel, sentences: Sequence[str]) -> ProbePrompt:
    body = "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, 1))
    user = f"{LOCALISATION['preamble'].format(n=len(sentences))}\n\n{body}\n\n{LOCALISATION['question']}"
    text = _wrap(lm, user, LOCALISATION["answer"])
    return ProbePrompt(
        text,
        _find(text, [f"{i}. {s}" for i, s in enumerate(sentences, 1)], skip=3),
        tuple(f" {i}" for i in range(1, len(sentences) + 1)),
    )


def discrimination_prompt(lm: LoadedModel, passage_a: str, passage_b: str) -> ProbePrompt:
    user = (
        f"{DISCRIMINATION['preamble']}\n\nPassage A: {passage_a}\n\nPassage B: {passage_b}\n\n"
        f"{DISCRIMINATION['question']}"
    )
    text = _wrap(lm, user, DISCRIMINATION["answer"])
    return ProbePrompt(text, _find(text, [f"Passage A: {passage_a}", f"Passage B: {passage_b}"], skip=11), (" A", " B"))


def _find(text: str, items: Sequence[str], skip: int) -> tuple[tuple[int, int], ...]:
    """Char spans of each item's text after its `skip`-character label ("1. ", "Passage A: "), searched in order."""
    out, pos = [], 0
    for it in items:
        i = text.find(it, pos)
        if i < 0:
            raise LabError(f"probe prompt lost the item {it[:30]!r}")
        label = len(it.split(" ", 1)[0]) + 1 if skip == 3 else skip
        out.append((i + label, i + len(it)))
        pos = i + len(it)
    return tuple(out)


def token_spans(tokenizer: Any, text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of `text` and, per char span, the token range [first, last+1) of the tokens that overlap it."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offs = list(enc["input_ids"]), enc["offset_mapping"]
    out = []
    for cs, ce in spans:
        toks = [i for i, (s, e) in enumerate(offs) if s < ce and e > cs]
        if not toks:
            raise LabError("a probe span covers no token")
        out.append((toks[0], toks[-1] + 1))
    return ids, out


def label_token_ids(tokenizer: Any, text: str, labels: Sequence[str]) -> tuple[list[int], list[int]]:
    """How to score `labels` as continuations of `text` from one next-token distribution.

    Returns (common, first): the tokens all labels' continuations share (e.g. a lone space token, for tokenizers that
    split " 1" into " " + "1"), to be appended to the prompt, and per label the first token after them (distinct).
    """
    base = tokenizer(text, add_special_tokens=False)["input_ids"]
    conts = []
    for lab in labels:
        full = tokenizer(text + lab, add_special_tokens=False)["input_ids"]
        if full[: len(base)] != base or len(full) <= len(base):
            raise LabError(f"label {lab!r} does not tokenize as a continuation of the answer prefix")
        conts.append(full[len(base) :])
    common: list[int] = []
    while all(len(c) > len(common) + 1 for c in conts) and len({c[len(common)] for c in conts}) == 1:
        common.append(conts[0][len(common)])
    first = [c[len(common)] for c in conts]
    if len(set(first)) != len(first):
        raise LabError(f"labels {list(labels)} share a first token; cannot score them from logits")
    return common, first
