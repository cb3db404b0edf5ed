"""Concept word forms for the rule-based judge: singulars, inflections and close derivations of a concept, the
shipped concept lists' base forms, and whether one token names a concept.

Like lab/judges/text.py, everything here is a small deterministic function of strings (and the shipped word lists).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).resolve().parent.parent / "data"

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
