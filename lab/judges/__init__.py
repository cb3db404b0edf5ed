"""Judges grade stored answers into `Verdict`s. `make_judge(name, **options)` builds one from the registry.

A judge is anything with `name`, `version` and `grade(answers) -> verdicts` (the `Judge` protocol), so an LLM judge
behind an HTTP API, an in-process HF judge and the deterministic rule-based judge are interchangeable, and every
stored generation can be regraded later (jobs/regrade.py).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lab.errors import LabError
from lab.judges.base import Answer, Judge, Verdict, answer_for

_FACTORIES: dict[str, Callable[..., Judge]] = {}


def register_judge(name: str) -> Callable[[Callable[..., Judge]], Callable[..., Judge]]:
    def deco(factory: Callable[..., Judge]) -> Callable[..., Judge]:
        _FACTORIES[name] = factory
        return factory
    return deco


def make_judge(name: str = "rules", **options: Any) -> Judge:
    _load_builtin()
    if name not in _FACTORIES:
        raise LabError(f"unknown judge '{name}' (known: {', '.join(sorted(_FACTORIES))})")
    return _FACTORIES[name](**options)


def judge_names() -> list[str]:
    _load_builtin()
    return sorted(_FACTORIES)


def _load_builtin() -> None:
    import lab.judges.rules  # noqa: F401  (registers "rules")
    import lab.judges.hf  # noqa: F401  (registers "openai" via lab.judges.llm, and "hf")


__all__ = ["Answer", "Judge", "Verdict", "answer_for", "make_judge", "register_judge", "judge_names"]
