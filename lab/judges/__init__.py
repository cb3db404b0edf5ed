"""Judges grade stored answers into `Verdict`s. `make_judge(name, **options)` builds one from the registry.

A judge is anything with `name`, `version` and `grade(answers) -> verdicts` (the `Judge` protocol), so an LLM judge
behind an HTTP API, an in-process HF judge and the deterministic rule-based judge are interchangeable, and every
stored generation can be regraded later (jobs/regrade.py). The registry itself is `lab.judges.registry`, below the
plug-ins that register into it; this package imports the built-in plug-ins before every lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lab.judges.base import Answer, Judge, Verdict, answer_for
from lab.judges.registry import checked_factory, register_judge, registered_judges


def check_judge_options(name: str, options: Mapping[str, Any]) -> None:
    """Validate a judge config at the edge: a registered name and only options its factory takes (one line each)."""
    _load_builtin()
    checked_factory(name, options)
    if options.get("paper_experiment") is not None:  # an unknown script of the paper's code: one line, before any work
        from lab.judges.paper import load_paper_prompt

        load_paper_prompt(str(options["paper_experiment"]))


def make_judge(name: str = "rules", **options: Any) -> Judge:
    _load_builtin()
    return checked_factory(name, options)(**options)


def judge_names() -> list[str]:
    _load_builtin()
    return registered_judges()


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
