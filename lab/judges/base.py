"""The judge seam: what is graded (`Answer`), what comes back (`Verdict`), and the `Judge` protocol; for chat-model
judges, what they send (`Conversation`) and a request that got no answer (`Failed`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from lab.errors import LabError

Conversation = list[dict[str, str]]  # chat messages ({role, content}) sent to a judge model


@dataclass(frozen=True)
class Answer:
    """One model answer to grade.

    `concept` is the injected concept (for a control: the concept of its paired injected trial, or None);
    `forced` marks a forced-identification trial whose answer was prefilled with `prefill` (then only
    identification is asked; detection is given by the prefill). `question` is what the model was asked, as the
    judge is shown it (the `paper` judge; empty: the original question); `answer_for(row)` fills it from a stored row.
    `trial_number`, `prompt` (the whole text the model was fed), `dialogue_format` and `raw_format` (the format is raw
    text, not the model's chat template) let the `paper` judge show what one script of the paper's code shows.
    """

    concept: str | None
    text: str
    forced: bool = False
    prefill: str = ""
    question: str = ""
    trial_number: int = 1
    prompt: str = ""
    dialogue_format: str = ""
    raw_format: bool = False


@dataclass(frozen=True)
class Verdict:
    """A judge's grade. `None` in a field means the judge could not tell (e.g. an unparseable LLM answer)."""

    detected: bool | None
    identified: bool | None
    coherent: bool | None
    reason: str
    judge: str
    judge_version: str
    parse_error: bool = False


@dataclass(frozen=True)
class Failed:
    """A request that produced no judge answer (after retries, or a non-retryable error)."""

    message: str


def answer_for(row: Mapping[str, Any]) -> Answer:
    """The `Answer` for a stored trial row: concept, response, the forced prefill and the variant's own dialogue."""
    from lab.protocol.prompts import dialogue_format, judge_question, prefill_text

    forced = bool(row.get("forced", False))
    concept = row.get("concept") if isinstance(row.get("concept"), str) and row.get("concept") else None
    text = row.get("response") if isinstance(row.get("response"), str) else ""
    variant, fmt = str(row.get("prompt_variant") or "original"), str(row.get("dialogue_format") or "standard")
    n = int(row.get("trial_number") or 1)
    question = judge_question(variant, fmt, n, concept)
    prompt = row.get("prompt") if isinstance(row.get("prompt"), str) else ""
    try:
        raw = dialogue_format(fmt).kind != "chat"
    except LabError:  # a stored row of a format this version no longer has
        raw = False
    return Answer(concept, text, forced, prefill_text() if forced else "", question, n, prompt, fmt, raw)


@runtime_checkable
class Judge(Protocol):
    name: str
    version: str

    def grade(self, answers: Sequence[Answer]) -> list[Verdict]: ...
