"""The experiment's word lists (protocol data, versioned copies in lab/data): the 500 concepts (the first 50 the
main test set) and the 99 baseline words (`baseline_words_paper`: the paper's 100 entries, one word twice, so its
mean weights that word twice), and the one way a config selects concepts from them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lab.errors import LabError


@dataclass(frozen=True)
class WordList:
    name: str
    words: tuple[str, ...]
    version: str  # sha256 prefix of the file's content


@lru_cache(maxsize=8)
def word_list(name: str = "concepts") -> WordList:
    """`concepts` (500 words, the first 50 the main test set), `baseline_words` (99) or `baseline_words_paper` (the
    paper's 100 entries, repeat kept), shipped in lab/data; `#` lines are the file's source notes."""
    files = {
        "concepts": "concepts.txt",
        "baseline": "baseline_words.txt",
        "baseline_words": "baseline_words.txt",
        "baseline_words_paper": "baseline_words_paper.txt",
    }
    if name not in files:
        raise LabError(f"unknown word list '{name}' (known: concepts, baseline_words, baseline_words_paper)")
    text = resources.files("lab").joinpath(f"data/{files[name]}").read_text()
    words = tuple(w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#"))
    return WordList(name, words, hashlib.sha256(text.encode()).hexdigest()[:12])


def select_concepts(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A concept selection in one of its known forms: 'first:N' (N ≤ the 500-word list), 'slice:A:B' (within it),
    'all', an explicit list, or the path of an existing file with one concept per line. Any other string is an error
    (a typo such as 'firts:10' or a missing file is never taken as one concept word); empty and duplicate selections
    are refused."""
    if isinstance(spec, str):
        words = _from_spec(spec.strip())
    else:
        words = list(spec)
    words = [w.strip() for w in words]
    if not words or any(not w for w in words):
        raise LabError("concepts must name at least one non-empty word")
    seen: set[str] = set()
    for w in words:
        if w.lower() in seen:
            raise LabError(f"duplicate concept '{w}'")
        seen.add(w.lower())
    return tuple(words)


def _from_spec(spec: str) -> Sequence[str]:
    allw = word_list("concepts").words
    n = len(allw)
    if spec == "all":
        return allw
    if m := re.fullmatch(r"first:(\d+)", spec):
        if not 1 <= int(m.group(1)) <= n:
            raise LabError(f"concepts '{spec}': N must be 1..{n} (the concept list has {n} words)")
        return allw[: int(m.group(1))]
    if m := re.fullmatch(r"slice:(\d+):(\d+)", spec):
        a, b = int(m.group(1)), int(m.group(2))
        if not 0 <= a < b <= n:
            raise LabError(f"concepts '{spec}': need 0 <= A < B <= {n} (the concept list has {n} words)")
        return allw[a:b]
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            raise LabError(f"concepts file {spec} is not a readable UTF-8 text file") from None
        return [w.strip() for w in text.splitlines() if w.strip() and not w.lstrip().startswith("#")]
    if "/" in spec or spec.endswith(".txt"):
        raise LabError(f"concepts file {spec} not found")
    raise LabError(
        f"concepts '{spec}' is not a known form: 'first:N' (N <= {n}), 'slice:A:B', 'all', a list such as "
        "[Bread, Ocean], or an existing file with one concept per line"
    )
