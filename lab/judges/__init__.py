"""Judges grade stored answers into `Verdict`s. `make_judge(name, **options)` builds one from the registry.

A judge is anything with `name`, `version` and `grade(answers) -> verdicts` (the `Judge` protocol), so an LLM judge
behind an HTTP API, an in-process HF judge and the deterministic rule-based judge are interchangeable, and every
stored generation can be regraded later (jobs/regrade.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lab.errors import LabError
from lab.judges.base import Answer, Judge, Verdict, answer_for
from lab.registry import Registry

_FACTORIES: Registry[Callable[..., Judge]] = Registry("judge")
_OPTIONS: dict[str, tuple[str, ...] | None] = {}


def register_judge(
    name: str, options: Iterable[str] | None = None
) -> Callable[[Callable[..., Judge]], Callable[..., Judge]]:
    """Register a judge factory under `name` (a name already taken raises). Its options are the factory's named
    parameters, plus `options` for what a `**kwargs` factory passes on; a `**kwargs` factory without `options`
    accepts anything (it must check its own)."""

    def deco(factory: Callable[..., Judge]) -> Callable[..., Judge]:
        params = inspect.signature(factory).parameters.values()
        named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params)
        _FACTORIES.add(name, factory)
        _OPTIONS[name] = None if open_ended and options is None else tuple(sorted({*named, *(options or ())}))
        return factory

    return deco


def check_judge_options(name: str, options: Mapping[str, Any]) -> None:
    """Validate a judge config at the edge: a registered name and only options its factory takes (one line each)."""
    _load_builtin()
    if name not in _FACTORIES:
        raise LabError(f"unknown judge '{name}' (known: {', '.join(sorted(_FACTORIES))})")
    if "api_key" in options:
        raise LabError(
            f"judge '{name}': never put the API key in a config; name its environment variable in api_key_env"
        )
    known = _OPTIONS[name]
    unknown = sorted(set(options) - set(known)) if known is not None else []
    if unknown:
        raise LabError(
            f"unknown option 'judge.options.{unknown[0]}' for judge '{name}' (known: {', '.join(known) or 'none'})"
        )


def make_judge(name: str = "rules", **options: Any) -> Judge:
    check_judge_options(name, options)
    return _FACTORIES[name](**options)


def judge_names() -> list[str]:
    _load_builtin()
    return sorted(_FACTORIES)


def _load_builtin() -> None:
    import lab.judges.hf  # noqa: F401  (registers "openai" via lab.judges.llm, and "hf")
    import lab.judges.rules  # noqa: F401  (registers "rules")


__all__ = [
    "Answer",
    "Judge",
    "Verdict",
    "answer_for",
    "check_judge_options",
    "make_judge",
    "register_judge",
    "judge_names",
]
