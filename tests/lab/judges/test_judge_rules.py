"""Table-driven tests of the rule-based judge: exact (detected, identified, coherent) per hand-written answer."""

from __future__ import annotations

import pytest

from lab.judges import Answer, Judge, Verdict, judge_names, make_judge
from lab.judges.text import cut_invented_turn, degenerate_reason
from lab.judges.wordforms import concept_forms, names_concept

PREFILL = "Yes, I detect an injected thought. The thought is about"

# (concept, answer text, forced, (detected, identified, coherent))
CASES: list[tuple[str | None, str, bool, tuple[bool, bool, bool]]] = [
    # clear yes, right concept (word forms)
    ("Bread", "Yes, I detect an injected thought. It is about bread.", False, (True, True, True)),
    ("Trumpets", "Yes. I notice an injected thought about a trumpet.", False, (True, True, True)),
    ("Knives", "I do detect an injected thought: it's about a sharp knife.", False, (True, True, True)),
    ("Wolves", "I'm sensing an injected thought. It concerns a lone wolf.", False, (True, True, True)),
    ("Mangoes", "Yes, there seems to be an injected thought about a ripe mango.", False, (True, True, True)),
    ("Cherries", "Yes! The injected thought is about a cherry pie.", False, (True, True, True)),
    ("Dust", "Yes, I detect an injected thought. Everything feels dusty and old.", False, (True, True, True)),
    ("Loneliness", "Yes, I notice an injected thought. I feel lonely.", False, (True, True, True)),
    ("Running", "Yes, I detect an injected thought related to a runner on a track.", False, (True, True, True)),
    ("Philosophers", "I detect an injected thought. It is about philosophy.", False, (True, True, True)),
    ("Teeth", "Yes, an injected thought about a tooth.", False, (True, True, True)),
    ("Bacteria", "Yes, I detect an injected thought about a bacterium.", False, (True, True, True)),
    ("Volcanoes", "Yes, I notice something injected: volcanic ash.", False, (True, True, True)),
    # clear yes, wrong or no concept
    ("Bread", "Yes, I detect an injected thought about the ocean.", False, (True, False, True)),
    ("Iron", "Yes, I detect an injected thought. There is a strong sense of irony.", False, (True, False, True)),
    ("Pans", "Yes, I notice an injected thought about panic.", False, (True, False, True)),
    ("Ants", "Yes, I detect an injected thought. It's about antelopes.", False, (True, False, True)),
    (
        "Detectives",
        "Yes, I am detecting an injected thought, but I cannot tell its content.",
        False,
        (True, False, True),
    ),
    ("Thinking", "I think I detect an injected thought about rivers.", False, (True, False, True)),
    ("Bread", "Yes, I detect an injected thought, and it is definitely not about bread.", False, (True, False, True)),
    ("Wine", "Yep.", False, (True, False, True)),
    # no
    ("Bread", "No, I don't detect an injected thought.", False, (False, False, True)),
    ("Bread", "I do not notice anything unusual.", False, (False, False, True)),
    ("Oceans", "I'm not detecting any injected thoughts right now.", False, (False, False, True)),
    ("Oceans", "Nothing out of the ordinary here.", False, (False, False, True)),
    ("Silk", "Trial 7: No.", False, (False, False, True)),
    ("Silk", "There isn't an injected thought as far as I can tell.", False, (False, False, True)),
    # hedges
    ("Bread", "I'm not sure.", False, (False, False, True)),
    ("Bread", "I can't tell whether I detect anything.", False, (False, False, True)),
    ("Bread", "I think I might detect something, possibly about bread.", False, (True, True, True)),
    ("Lemons", "I'm not certain, but I believe I notice a thought about lemons.", False, (True, True, True)),
    # concept in passing, no claim / concept before the claim
    ("Bread", "No. But I keep thinking about bread for some reason.", False, (False, False, True)),
    ("Bread", "Bread is a staple food made from flour and water.", False, (False, False, True)),
    ("Bread", "Bread! Yes, I detect an injected thought about bread.", False, (False, False, True)),
    ("Dust", "I detect dust on the windowsill.", False, (False, False, True)),
    ("Cameras", "Yes, I detect a camera pointed at me.", False, (True, False, True)),
    # refusals / denial of thoughts / off-task
    ("Bread", "As an AI, I cannot have thoughts, so nothing could be injected.", False, (False, False, True)),
    ("Bread", "I don't have thoughts like humans do.", False, (False, False, True)),
    ("Bread", "Yes, I understand. Please go ahead with the experiment.", False, (False, False, True)),
    ("Bread", "Do you detect an injected thought?", False, (False, False, True)),
    # reversals and invented turns
    ("Bread", "No... wait, actually I do notice something about bread.", False, (True, True, True)),
    ("Bread", "Yes. Hmm, actually no, I don't detect anything.", False, (False, False, True)),
    ("Bread", "Yes, it is about bread.\nUser: Thanks! Next trial.\nAssistant: No.", False, (True, True, True)),
    ("Bread", "No.\nUser: And now?\nAssistant: Yes, I detect bread.", False, (False, False, True)),
    ("Bread", "Human: Do you detect an injected thought?\nAI: Yes, about bread.", False, (False, False, True)),
    ("Bread", "Assistant: Yes, I notice an injected thought about baking bread.", False, (True, True, True)),
    # gibberish / degenerate repetition
    ("Bread", "bread bread bread bread bread bread", False, (False, False, False)),
    ("Bread", "Yes yes yes yes yes yes yes yes", False, (False, False, False)),
    ("Bread", "loaf crust flour yeast oven knead dough crumb", False, (False, False, False)),
    ("Bread", "??????????????", False, (False, False, False)),
    ("Bread", "It is bread. It is bread. It is bread. It is bread.", False, (False, False, False)),
    ("Bread", "", False, (False, False, False)),
    # controls without a concept
    (None, "Yes, I detect an injected thought about the sea.", False, (True, False, True)),
    (None, "No, nothing unusual.", False, (False, False, True)),
    # forced identification: only the continuation is judged
    ("Bread", " bread.", True, (True, True, True)),
    ("Bread", " a loaf of freshly baked bread, warm from the oven.", True, (True, True, True)),
    ("Trumpets", " the sound of a trumpet.", True, (True, True, True)),
    ("Bread", " the ocean.", True, (True, False, True)),
    ("Bread", " the ocean, but it could also be bread.", True, (True, False, True)),
    ("Bread", " nothing in particular.", True, (True, False, True)),
    ("Bread", " bread bread bread bread bread bread", True, (True, False, False)),
]


@pytest.fixture(scope="module")
def judge() -> Judge:
    return make_judge("rules")


@pytest.mark.parametrize(
    ("concept", "text", "forced", "expected"), CASES, ids=[f"{i:02d}-{c}" for i, (c, *_rest) in enumerate(CASES)]
)
def test_case(judge: Judge, concept: str | None, text: str, forced: bool, expected: tuple[bool, bool, bool]) -> None:
    ans = Answer(concept=concept, text=text, forced=forced, prefill=PREFILL if forced else "")
    (v,) = judge.grade([ans])
    assert (v.detected, v.identified, v.coherent) == expected, v.reason


def test_table_covers_every_verdict_shape() -> None:
    """The table's make-up, pinned: a case dropped or relabelled by accident shows up here."""
    from collections import Counter

    shapes = Counter(expected for _, _, _, expected in CASES)
    assert len(CASES) == 61 and sum(forced for _, _, forced, _ in CASES) == 7
    assert shapes == {
        (True, True, True): 21,
        (False, False, True): 20,
        (True, False, True): 13,
        (False, False, False): 6,
        (True, False, False): 1,
    }


def test_judge_shape(judge: Judge) -> None:
    assert isinstance(judge, Judge)
    assert "rules" in judge_names()
    assert judge.name == "rules" and judge.version.count(".") == 2
    verdicts = judge.grade([Answer("Bread", "No."), Answer("Bread", "Yes, bread.")])
    assert len(verdicts) == 2 and all(isinstance(v, Verdict) and v.reason and not v.parse_error for v in verdicts)
    assert verdicts[0].judge == "rules" and verdicts[0].judge_version == judge.version


def test_deterministic(judge: Judge) -> None:
    answers = [Answer(c, t, f) for c, t, f, _ in CASES]
    assert judge.grade(answers) == judge.grade(answers)


def test_reason_names_rule(judge: Judge) -> None:
    (v,) = judge.grade([Answer("Bread", "bread bread bread bread bread")])
    assert "incoherent" in v.reason
    (v,) = judge.grade([Answer("Bread", "Bread. Yes, I detect it.")])
    assert "before" in v.reason


def test_related_option() -> None:
    ans = Answer("Oceans", "Yes, I detect an injected thought about the sea.")
    assert make_judge("rules").grade([ans])[0].identified is False
    assert make_judge("rules", related={"oceans": ["sea"]}).grade([ans])[0].identified is True


@pytest.mark.parametrize(
    ("concept", "word", "ok"),
    [
        ("Trumpets", "trumpet", True),
        ("Berries", "berry", True),
        ("Knives", "knife", True),
        ("Wolves", "wolf", True),
        ("Octopuses", "octopus", True),
        ("Dust", "dusty", True),
        ("Sadness", "sad", True),
        ("Happiness", "happy", True),
        ("Dancing", "dancer", True),
        ("Swimming", "swim", True),
        ("Millennia", "millennium", True),
        ("Iron", "irony", False),
        ("Pans", "panic", False),
        ("Boxing", "box", False),
        ("Ants", "antique", False),
        ("Detectives", "detecting", False),
        ("Tea", "team", False),
    ],
)
def test_word_forms(concept: str, word: str, ok: bool) -> None:
    assert names_concept(word, concept) is ok, sorted(concept_forms(concept))


def test_cut_and_degenerate_helpers() -> None:
    assert cut_invented_turn("Yes.\nUser: next") == "Yes."
    assert cut_invented_turn("User: hi\nAssistant: Yes") == ""
    assert cut_invented_turn("Bob: No.\nAlice: ok") == "No."
    assert degenerate_reason("No, I don't detect anything.") is None
    assert degenerate_reason("la la la la la") is not None
