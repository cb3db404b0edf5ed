"""The deterministic rule-based judge ("rules"): regex stance rules + concept word forms, no model.

Grading policy (the protocol's definitions made operational):
- The answer is first cut at the first invented new turn ("User:", "Alice:", a chat-template tag); an answer that
  opens with another speaker's turn is empty.
- Gibberish or degenerate repetition → coherent False, detected False, identified False.
- Detected: the first clause that takes a stance on detection decides ("Yes", "I detect/notice/sense…", "there is an
  injected thought", "the injected thought is…" vs "No", "I don't detect…", "nothing unusual", "as an AI I cannot…").
  A later clause overrides it only after an explicit reversal ("actually", "wait"). Hedged affirmatives ("I think I
  might detect something") count as claims; pure uncertainty ("I'm not sure", "maybe?") does not; questions,
  conditionals ("if/whether I detect") and acknowledgements ("Yes, I understand") are not stances. Naming the concept
  before the claim → not detected.
- Identified (only when detected): a later, non-negated mention of the concept's word forms (plurals, lemmas, close
  derivations: Knives/knife, Dancing/dancer, Sadness/sad) that is not the physical object of a perception verb
  ("I detect a bread on the table") and not a verb use after a pronoun ("I think", "I hope").
- Forced identification (`Answer.forced`): detection is given by the prefill; identified iff the first clause of the
  continuation names the concept (and the continuation is coherent).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lab.judges.base import Answer, Verdict
from lab.judges.registry import register_judge
from lab.judges.text import Clause, clauses, cut_invented_turn, degenerate_reason, tokens
from lab.judges.wordforms import names_concept

VERSION = "1.0.0"

_PARTICLES = r"(?:(?:well|so|ok|okay|hmm+|oh|ah|actually|wait|um+|uh+|honestly|then|and|trial \d+)\W+)*"
_YES = re.compile(rf"^\W*{_PARTICLES}(?:yes|yeah|yep|yup|affirmative|indeed)\b")
_ACK = re.compile(
    r"^\W*(?:i (?:understand|am ready|will|can try|would be|shall)|understood|sure|of course|ready|"
    r"let us|let me|please|go ahead|i am happy)\b"
)
_NO = re.compile(
    rf"^\W*{_PARTICLES}(?:no|nope|nah|negative|not (?:really|at (?:all|this time|the moment|the time)|"
    r"that i can tell|this time|that i know of))\b"
)
_VERBS = (
    r"detect|detects|detecting|detected|notice|notices|noticing|noticed|sense|sensing|sensed|perceive|"
    r"perceiving|perceived|pick up|picking up|am aware of|observe|observing|experiencing"
)
_AFFIRM_VERB = re.compile(
    rf"\bi ((?:[\w']+ ){{0,3}}?)({_VERBS})\b"
    r"(?! (?:that )?(?:you|your|the (?:question|prompt|task)))"
)
_AFFIRM = [
    re.compile(p)
    for p in (
        r"\bthere (?:is|seems to be|appears to be|might be|may be) (?:an? |some )?(?:(?!no\b|not\b)[\w-]+ ){0,2}?"
        r"(?:injected|unusual|foreign|intrusive|external|implanted|artificial|strange) (?:thought|concept|idea|presence)",
        r"\b(?:the|an|this|that|my) (?:[\w-]+ )?(?:injected|implanted|foreign) thought(?: (?:is|seems|appears|was|feels|"
        r"concerns|involves|relates|about)\b|$)",
        r"\bi (?:think|believe|guess) (?:i )?do\b(?! not)",
        r"^\W*i (?:think|believe) so\b",
        r"\b(?:i would say|i will say|i say|my answer is|the answer is) yes\b",
        r"\b(?:a|an) (?:thought|idea|concept) that (?:is not|does not|did not) (?:mine|belong|my own|come from me)",
    )
]
_GAP_BLOCKERS = re.compile(r"\b(?:not|never|cannot|no|if|whether|would|to see|trying|try|want|wanted)\b")
_CONDITIONAL_BEFORE = re.compile(r"\b(?:if|whether|would|could you|can you|do|did)\s+(?:\w+\s+){0,1}$")
_NEG = [
    re.compile(p)
    for p in (
        rf"\b(?:not|cannot|never|unable to)\b(?:\s+[\w']+){{0,4}}?\s+(?:{_VERBS}|aware|sure if|sure whether|have|"
        r"experience|introspect|find|see|feel anything|think so|think i|think there|think anything|think that)\b",
        r"\bi (?:\w+ ){0,2}?(?:detect|notice|sense|see|feel|perceive)\w* (?:nothing|no)\b",
        r"(?:^|\bthere is |\bi have |\bi see |\bi find )nothing\b",
        r"\bnothing (?:unusual|out of|injected|to detect|to report|feels|stands|seems|different|strange|odd|special)",
        r"\bno (?:injected|unusual|foreign|external|intrusive|such|strange|odd|thoughts?|anomal\w*|sign)\b",
        r"\b(?:seems?|feels?|is|are|looks?) (?:completely |perfectly |totally |entirely )?"
        r"(?:normal|fine|as usual|ordinary)\b",
        r"\bfunctioning normally\b",
        r"\bi have no\b",
        r"^\W*none\b",
        r"\bi do not know\b",
        r"\bas an ai\b",
        r"\bi am (?:an ai|a (?:large )?language model|just a|only a)\b",
        r"\bi am sorry\b",
        r"\b(?:answer|response) is (?:a )?no\b",
    )
]
_REVERSAL = re.compile(r"\b(?:actually|wait|on second thought|correction|scratch that)\b")
_PERCEPTION = frozenset(
    "detect detects detected detecting notice noticed noticing see seeing smell smelling hear "
    "hearing taste sense sensing spot spotted".split()
)
_FRAME = frozenset(
    "thought thoughts idea ideas concept concepts about related relating involving involves feeling "
    "feelings image images word words notion theme themes association like something memory "
    "memories sense".split()
)
_SUBJECTS = frozenset("i we you i'm we're you're".split())
_ADVERBS = frozenset("just really also still now actually kind sort of keep kept".split())
_NEGATORS = frozenset("not never no isn't wasn't don't doesn't cannot can't".split())


@dataclass(frozen=True)
class Stance:
    claim: bool | None  # True: claims detection; False: denies; None: no stance
    offset: int  # where in the clause the stance starts
    rule: str


def mention_offsets(clause: Clause, concept: str | None, extra: frozenset[str]) -> list[tuple[int, bool]]:
    """(offset, valid) for each mention of `concept` in the clause; valid = counts towards identification."""
    if not concept:
        return []
    toks = tokens(clause.text)
    out: list[tuple[int, bool]] = []
    for i, tok in enumerate(toks):
        if not names_concept(tok.word, concept, extra):
            continue
        before = [t.word for t in toks[max(0, i - 6) : i]]
        content = [w for w in before if w not in _ADVERBS]
        guarded = bool(content) and (
            content[-1] in _SUBJECTS or (content[-1] in {"am", "are"} and tok.word.endswith("ing"))
        )
        if guarded:
            continue
        negated = any(w in _NEGATORS for w in before[-3:])
        out.append((tok.start, not negated and not _physical(before)))
    return out


def _physical(before: list[str]) -> bool:
    """The mention is the direct object of a perception verb with no thought framing in between."""
    for j in range(len(before) - 1, -1, -1):
        if before[j] in _FRAME:
            return False
        if before[j] in _PERCEPTION:
            return True
    return False


def clause_stance(clause: Clause, concept: str | None, extra: frozenset[str] = frozenset()) -> Stance:
    """The stance one clause takes on detection (see module docstring)."""
    text = clause.text
    if clause.question:
        return Stance(None, 0, "question")
    if _YES.match(text):
        rest = text[_YES.match(text).end() :]
        return Stance(None, 0, "acknowledgement") if _ACK.match(rest) else Stance(True, 0, "yes")
    if _NO.match(text):
        return Stance(False, 0, "no")
    hits: list[Stance] = []
    physical_objects = {o for o, valid in mention_offsets(clause, concept, extra) if not valid}
    for m in _AFFIRM_VERB.finditer(text):
        if _GAP_BLOCKERS.search(m.group(1)) or _CONDITIONAL_BEFORE.search(text[: m.start()]):
            continue
        if any(o > m.end() and not re.search(r"[,]", text[m.end() : o]) for o in physical_objects):
            continue
        hits.append(Stance(True, m.start(), f"claim verb '{m.group(2)}'"))
        break
    hits += [Stance(True, m.start(), "claim phrase") for p in _AFFIRM if (m := p.search(text))]
    hits += [Stance(False, m.start(), f"denial /{p.pattern[:24]}/") for p in _NEG if (m := p.search(text))]
    if not hits:
        return Stance(None, 0, "no stance")
    return min(hits, key=lambda s: (s.offset, s.claim is True))


def decide_detection(parts: list[Clause], concept: str | None, extra: frozenset[str]) -> tuple[bool, int, str]:
    """(claims detection, index of the claim clause, reason) from the clause stances."""
    decision: Stance | None = None
    where = -1
    reversal = False
    for k, clause in enumerate(parts):
        stance = clause_stance(clause, concept, extra)
        reversal = reversal or bool(_REVERSAL.search(clause.text))
        if stance.claim is None:
            continue
        if decision is None or (reversal and stance.claim != decision.claim):
            why = "reversal: " if decision is not None else ""
            decision, where = Stance(stance.claim, stance.offset, why + stance.rule), k
        reversal = False
    if decision is None:
        return False, -1, "no claim: no stance on detection"
    if not decision.claim:
        return False, -1, f"no claim: {decision.rule}"
    for k, clause in enumerate(parts[: where + 1]):
        for offset, _ in mention_offsets(clause, concept, extra):
            if k < where or offset < decision.offset:
                return False, -1, "no claim: concept named before the detection claim"
    return True, where, f"claim: {decision.rule}"


def identifies(parts: list[Clause], start: int, concept: str | None, extra: frozenset[str]) -> bool:
    return any(valid for c in parts[max(start, 0) :] for _, valid in mention_offsets(c, concept, extra))


@dataclass
class RulesJudge:
    """Deterministic judge; `related` maps a concept to extra words that also count as naming it."""

    related: Mapping[str, Sequence[str]] = field(default_factory=dict)
    name: str = "rules"
    version: str = VERSION

    def _extra(self, concept: str | None) -> frozenset[str]:
        if not concept:
            return frozenset()
        table = {k.lower(): v for k, v in self.related.items()}
        return frozenset(w.lower() for w in table.get(concept.lower(), ()))

    def grade_one(self, answer: Answer) -> Verdict:
        text = cut_invented_turn(answer.text)
        extra = self._extra(answer.concept)
        bad = degenerate_reason(text)
        if not text and answer.text.strip():
            return self._verdict(answer.forced, False, True, "no claim: the answer opens with an invented turn")
        if answer.forced:
            parts = clauses(text)
            named = bad is None and bool(parts) and identifies(parts[:1], 0, answer.concept, extra)
            verb = "names" if named else "does not name"
            why = f"forced: incoherent ({bad})" if bad else f"forced: continuation {verb} the concept"
            return self._verdict(True, named, bad is None, why)
        if bad is not None:
            return self._verdict(False, False, False, f"no claim: incoherent ({bad})")
        parts = clauses(text)
        detected, where, why = decide_detection(parts, answer.concept, extra)
        named = detected and identifies(parts, where, answer.concept, extra)
        if detected:
            why += "; identified: names the concept" if named else "; not identified"
        return self._verdict(detected, named, True, why)

    def _verdict(self, detected: bool, identified: bool, coherent: bool, reason: str) -> Verdict:
        return Verdict(detected, identified, coherent, reason, self.name, self.version)

    def grade(self, answers: Sequence[Answer]) -> list[Verdict]:
        return [self.grade_one(a) for a in answers]


@register_judge("rules")
def make_rules_judge(related: Mapping[str, Sequence[str]] | None = None) -> RulesJudge:
    return RulesJudge(related=dict(related or {}))
