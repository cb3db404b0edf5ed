"""The judge registry: factories by name and the options each takes.

Plug-ins (`lab.judges.rules`, `lab.judges.llm`, `lab.judges.hf`, a test's own judge) register here with
`register_judge`; `lab.judges` imports the built-in plug-ins before it looks a name up, so a caller of
`make_judge("rules")` never imports one itself. Nothing here imports a plug-in: the registry sits below them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lab.errors import LabError
from lab.judges.base import Judge
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


def registered_judges() -> list[str]:
    """The names registered so far (`lab.judges.judge_names` loads the built-in ones first)."""
    return sorted(_FACTORIES)


def checked_factory(name: str, options: Mapping[str, Any]) -> Callable[..., Judge]:
    """The factory registered under `name`, after checking `options` against it (one-line `LabError`s)."""
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
    return _FACTORIES[name]
