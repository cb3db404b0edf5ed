"""The judge seam: what is graded (`Answer`), what comes back (`Verdict`), and the `Judge` protocol."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Answer:
    """One model answer to grade.

    `concept` is the injected concept (for a control: the concept of its paired injected trial, or None);
    `forced` marks a forced-identification trial whose answer was prefilled with `prefill` (then only
    identification is asked; detection is given by the prefill).
    """

    concept: str | None
    text: str
    forced: bool = False
    prefill: str = ""


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


@runtime_checkable
class Judge(Protocol):
    name: str
    version: str

    def grade(self, answers: Sequence[Answer]) -> list[Verdict]: ...
