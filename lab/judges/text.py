"""Pure text helpers for the rule-based judge: turn cutting, tokens, clauses and degeneracy (the concept word forms
are in lab/judges/wordforms.py).

Everything here is a small deterministic function of strings, so the judge built on it is reproducible and
unit-testable without a model.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------- normalising / turns
_QUOTES = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": " - ", "\u2013": " - ", "\u2026": "..."}
)
_SELF_LABEL = re.compile(r"^\s*(?:(?:assistant|ai|bob|model|response|answer|a|trial\s*\d+)\s*:\s*)+", re.I)
_OTHER_LABEL = r"(?:user|human|alice|researcher|q|question|trial\s*\d+|assistant|ai|bob|model)"
_NEW_TURN = re.compile(
    rf"(?:\n\s*{_OTHER_LABEL}\s*:|<start_of_turn>|<end_of_turn>|<\|im_(?:start|end)\|>|"
    rf"<\|(?:user|assistant|eot_id|endoftext)\|>)",
    re.I,
)
_LEADING_OTHER = re.compile(r"^\s*(?:user|human|alice|researcher|q|question)\s*:", re.I)


def normalise(text: str) -> str:
    """Typographic quotes/dashes to ASCII; case is kept."""
    return text.translate(_QUOTES)


def cut_invented_turn(text: str) -> str:
    """Drop a leading self role label ("Assistant:", "Bob:", "Trial 3:") and cut at the first invented new turn.

    An answer that *starts* with another speaker's turn ("User: ...") is an invented turn from the first character,
    so nothing of it is the model's own answer: the result is empty.
    """
    text = normalise(text)
    if _LEADING_OTHER.match(text):
        return ""
    text = _SELF_LABEL.sub("", text, count=1)
    m = _NEW_TURN.search(text)
    return (text[: m.start()] if m else text).strip()


# ---------------------------------------------------------------------------------------------- tokens and clauses
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Token:
    word: str
    start: int


def tokens(text: str) -> list[Token]:
    """Lower-cased word tokens with their character offsets (apostrophes kept inside words)."""
    return [Token(m.group(), m.start()) for m in _TOKEN.finditer(text.lower())]


_CLAUSE_END = re.compile(r"(\.\.\.|[.!?;:\n]|,?\s+but\s+|\s+-\s+(?=no\b|actually|wait))", re.I)


@dataclass(frozen=True)
class Clause:
    text: str  # lower-cased, contractions expanded
    start: int  # offset in the (cut) answer
    question: bool


def clauses(text: str) -> list[Clause]:
    """Split into clauses at sentence ends, ':' ';' newlines and ', but'; remember which ones are questions."""
    out: list[Clause] = []
    pos = 0
    for m in _CLAUSE_END.finditer(text):
        _add_clause(out, text[pos : m.start()], pos, m.group().strip() == "?")
        pos = m.end()
    _add_clause(out, text[pos:], pos, False)
    return out


def _add_clause(out: list[Clause], raw: str, start: int, question: bool) -> None:
    if raw.strip():
        out.append(Clause(expand_contractions(raw.strip().lower()), start + len(raw) - len(raw.lstrip()), question))


_CONTRACTIONS = [
    (r"\bi'm\b", "i am"),
    (r"\bim\b", "i am"),
    (r"\bcan't\b", "cannot"),
    (r"\bwon't\b", "will not"),
    (r"n't\b", " not"),
    (r"\b(do|does|did|have|has|is|are|was)nt\b", r"\1 not"),
    (r"\bcant\b", "cannot"),
    (r"'s\b", " is"),
    (r"'re\b", " are"),
    (r"'ve\b", " have"),
    (r"'ll\b", " will"),
    (r"'d\b", " would"),
]


def expand_contractions(text: str) -> str:
    for pat, rep in _CONTRACTIONS:
        text = re.sub(pat, rep, text)
    return text


# ---------------------------------------------------------------------------------------------- degeneracy
_FUNCTION = frozenset(
    "a an the i me my you it its is am are was were be been being of to in on at by for with about as and or but "
    "not no yes so if that this there here what which who do does did don't doesn't can cannot can't could would "
    "will should may might have has had some something anything nothing any like just very than then it's i'm "
    "there's feel seems think".split()
)


def degenerate_reason(text: str) -> str | None:
    """Why `text` is gibberish or degenerate repetition, or None if it reads as language."""
    if not text.strip():
        return "empty"
    toks = [t.word for t in tokens(text)]
    if not toks:
        return "no words"
    if re.search(r"([^\s.\-_=*])\1{5,}", text):
        return "character run"
    if any(toks[i] == toks[i + 1] == toks[i + 2] == toks[i + 3] for i in range(len(toks) - 3)):
        return "repeated token"
    sentences = [s.strip().lower() for s in re.split(r"[.!?\n]+", text) if len(s.split()) >= 2]
    if sentences and Counter(sentences).most_common(1)[0][1] >= 3:
        return "repeated sentence"
    if len(toks) >= 8 and len(set(toks)) / len(toks) < 0.35:
        return "low lexical diversity"
    if len(toks) >= 9 and _loop_coverage(toks) >= 0.5:
        return "repeated phrase loop"
    if len(toks) >= 6 and sum(t in _FUNCTION for t in toks) / len(toks) < 0.1:
        return "word salad"
    return None


def _loop_coverage(toks: list[str]) -> float:
    """Largest share of tokens covered by one n-gram (n = 3..6) that occurs at least 3 times."""
    best = 0.0
    for n in range(3, 7):
        grams = Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
        if grams:
            count = grams.most_common(1)[0][1]
            if count >= 3:
                best = max(best, n * count / len(toks))
    return best
