"""Pure text helpers for the rule-based judge: turn cutting, tokens, clauses, degeneracy and concept word forms.

Everything here is a small deterministic function of strings, so the judge built on it is reproducible and
unit-testable without a model.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).resolve().parent.parent / "data"

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


# ---------------------------------------------------------------------------------------------- word forms
_IRREGULAR = {
    "teeth": "tooth",
    "feet": "foot",
    "geese": "goose",
    "mice": "mouse",
    "men": "man",
    "women": "woman",
    "children": "child",
    "people": "person",
    "millennia": "millennium",
    "bacteria": "bacterium",
    "fungi": "fungus",
    "cacti": "cactus",
    "octopi": "octopus",
    "criteria": "criterion",
    "data": "datum",
}
# Morphological relatives that suffix rules cannot reach (adjective/noun pairs of the concept list).
_RELATIVES = {
    "pride": ["proud"],
    "wisdom": ["wise"],
    "chaos": ["chaotic"],
    "poetry": ["poem", "poems", "poet", "poets"],
    "anxiety": ["anxious"],
    "jealousy": ["jealous"],
    "envy": ["envious"],
    "gratitude": ["grateful"],
    "shame": ["ashamed"],
    "boredom": ["bored", "boring"],
    "confusion": ["confused", "confusing"],
    "disgust": ["disgusted", "disgusting"],
    "excitement": ["excited", "exciting"],
    "guilt": ["guilty"],
    "serenity": ["serene"],
    "despair": ["desperate", "despairing"],
    "hope": ["hopeful", "hoping"],
    "regret": ["regretful"],
    "dread": ["dreadful"],
    "skepticism": ["skeptic", "skeptical", "sceptical"],
    "melancholy": ["melancholic"],
    "loneliness": ["lonely", "alone"],
    "tooth": ["teeth", "dental"],
    "youth": ["young"],
    "fungus": ["fungi"],
    "cactus": ["cacti"],
    "knife": ["knives"],
}
TASK_WORDS = frozenset(
    "detect detects detected detecting detection inject injects injected injecting injection "
    "thought thoughts notice noticed noticing think thinks".split()
)


def singulars(word: str) -> set[str]:
    """`word` plus its candidate singular forms (Berries → berry, Knives → knife, Volcanoes → volcano)."""
    w = word.lower()
    out = {w}
    if w in _IRREGULAR:
        out.add(_IRREGULAR[w])
    if w.endswith("ies") and len(w) > 4:
        out.add(w[:-3] + "y")
    if w.endswith("ves") and len(w) > 4:
        out |= {w[:-3] + "f", w[:-3] + "fe"}
    if re.search(r"(?:s|x|z|ch|sh|o)es$", w):
        out.add(w[:-2])
    if w.endswith("s") and not re.search(r"(?:ss|us|is)$", w) and len(w) > 3:
        out.add(w[:-1])
    return out


def derived_forms(lemma: str) -> set[str]:
    """Inflections and close derivations of a singular concept lemma (dance/dancer for Dancing, sad for Sadness)."""
    forms = {lemma, lemma + "s", lemma + "es"}
    if lemma.endswith("y"):
        forms |= {lemma[:-1] + "ies", lemma[:-1] + "ic", lemma[:-1] + "ical"}
    if lemma.endswith("osity"):
        forms.add(lemma[:-5] + "ous")
    if lemma.endswith("ity"):
        forms.add(lemma[:-3] + "ite")
    if lemma.endswith("ness") and len(lemma) > 6:
        base = lemma[:-4]
        forms |= {base[:-1] + "y" if base.endswith("i") else base}
    if lemma.endswith("ing") and len(lemma) > 5:
        stems = {lemma[:-3], lemma[:-3] + "e"}
        if len(lemma) > 6 and lemma[-4] == lemma[-5]:
            stems.add(lemma[:-4])
        for s in stems | {lemma[:-3]}:
            forms |= {s + "er", s + "ers"}
        forms |= stems | {s + "s" for s in stems} | {s + "ed" for s in stems if not s.endswith("e")}
    if lemma.endswith("er") and len(lemma) > 5:
        forms |= {lemma + "ing", lemma[:-2] + "ing"}
    if lemma.endswith("o"):
        forms.add(lemma[:-1] + "ic")
    if len(lemma) >= 4 and not lemma.endswith(("y", "e")):
        forms.add(lemma + "y")
    forms |= set(_RELATIVES.get(lemma, []))
    return forms


@lru_cache(maxsize=1)
def known_concept_bases() -> dict[str, str]:
    """Base forms (lemma + plural) of every word in the shipped concept lists, mapped to their concept."""
    out: dict[str, str] = {}
    for name in ("concepts.txt", "baseline_words.txt"):
        path = _DATA / name
        if path.exists():
            for word in path.read_text().split():
                for s in singulars(word):
                    out.setdefault(s, word.lower())
    return out


@lru_cache(maxsize=2048)
def concept_forms(concept: str) -> frozenset[str]:
    """Surface forms that name `concept`: inflections and derivations, minus base forms of *other* concepts."""
    own = singulars(concept)
    bases = known_concept_bases()
    canon = canonical(concept)
    forms: set[str] = set()
    for lemma in own:
        forms |= derived_forms(lemma)
    return frozenset(f for f in forms if f in own or bases.get(f, canon) == canon)


def canonical(concept: str) -> str:
    """The concept-list spelling a word belongs to ("ocean" → "oceans"), else the word itself, lower-cased."""
    bases = known_concept_bases()
    return next((bases[s] for s in sorted(singulars(concept)) if s in bases), concept.lower())


def shares_family(token: str, concept: str) -> bool:
    """Same word family by a long common prefix (philosophy ~ Philosophers, infinite ~ Infinity)."""
    if token in TASK_WORDS or known_concept_bases().get(token, canonical(concept)) != canonical(concept):
        return False
    for lemma in singulars(concept):
        n = 0
        while n < min(len(token), len(lemma)) and token[n] == lemma[n]:
            n += 1
        if n >= 7 and n >= 0.8 * min(len(token), len(lemma)):
            return True
    return False


def names_concept(token: str, concept: str, extra: frozenset[str] = frozenset()) -> bool:
    """Whether one lower-cased token names `concept` (a form, a family member, or a configured related word)."""
    return bool(singulars(token) & (concept_forms(concept) | extra)) or shares_family(token, concept)
