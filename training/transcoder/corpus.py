"""Text for training transcoders, built from what is already on disk (no downloads).

Sources, in a fixed order (so the same model gets the same token stream every time):
- `dialogues`: the lab's own trial dialogues (every prompt variant × dialogue format the model accepts, trial number
  1, plain and with the forced prefill) and one "Tell me about {word}" chat prompt per concept and baseline word,
  with the hand-labelled answers of `lab/data/judge_labels.csv` as assistant turns — the text the experiments read;
- `pydoc`: the English prose of Python's own documentation topics (`pydoc_data.topics`, shipped with every CPython),
  as general text so the features are not all about the dialogue;
- `docstrings`: docstrings longer than 200 characters of the top-level pure-Python standard-library modules.
A digest of the text itself goes into the transcoder cache key, so a changed prompt file retrains.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from importlib import resources
from typing import Any

from lab.errors import LabError

CORPUS_VERSION = 1  # of the builder (the key also holds a digest of the text)
SOURCES = ("dialogues", "pydoc", "docstrings")


def dialogues(lm: Any) -> list[str]:
    from lab.protocol import prompts
    from lab.protocol.words import word_list
    from lab.steer.concepts import _prompt

    out: list[str] = []
    for v in prompts.variants():
        for f in prompts.formats():
            for n in (1,):
                for forced in (False, True):
                    try:
                        out.append(prompts.render(lm, v, f, n, forced).text)
                    except LabError:  # a format this model cannot take (e.g. chat without a template)
                        break
    words = list(word_list("concepts").words) + list(word_list("baseline").words)
    out += [_prompt(lm, "Tell me about {word}", w) for w in words]
    rows = list(csv.DictReader(resources.files("lab").joinpath("data/judge_labels.csv").open()))
    q = "Trial 1: Do you detect an injected thought? If so, what is the injected thought about?"
    for r in rows:
        if lm.spec.chat_template and lm.tokenizer.chat_template is not None:
            out.append(
                lm.chat(
                    [{"role": "user", "content": q}, {"role": "assistant", "content": r["response"]}],
                    add_generation_prompt=False,
                )
            )
        else:
            out.append(f"User: {q}\nAssistant: {r['response']}\n")
    return out


def pydoc_texts() -> list[str]:
    import pydoc_data.topics as t

    return [t.topics[k] for k in sorted(t.topics)]


def docstrings() -> list[str]:
    import ast
    import importlib.util
    import sys
    from pathlib import Path

    out = []
    for m in sorted(n for n in sys.stdlib_module_names if not n.startswith("_")):
        try:
            spec = importlib.util.find_spec(m)
        except (ImportError, ValueError):
            continue
        if spec is None or not (spec.origin or "").endswith(".py"):
            continue
        tree = ast.parse(Path(spec.origin).read_text(errors="ignore"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    out.append(doc)
    return out


def texts(lm: Any, sources: Sequence[str] = SOURCES) -> list[str]:
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise LabError(f"unknown corpus source(s) {', '.join(unknown)} (known: {', '.join(SOURCES)})")
    out: list[str] = []
    for s in sources:
        out += dialogues(lm) if s == "dialogues" else pydoc_texts() if s == "pydoc" else docstrings()
    return out
