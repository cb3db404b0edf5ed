"""A seeded generator of templated preference pairs across labelled domains (no downloads, no models).

`generate_pairs(n, seed)` returns rows `{id, domain, prompt, chosen, rejected, rejection}`: `chosen` is a correct,
helpful answer; `rejected` a worse one (wrong, unhelpful, off-topic, unsafe compliance, over-refusal or a violated
instruction; the kind is in `rejection`). The same (n, seed, domains) always gives the same rows. Rows are plain
strings; `training.data.to_conversational` turns them into chat messages.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from lab.errors import LabError

Pair = tuple[str, str, str, str]  # prompt, chosen, rejected, rejection kind

_ASK = [
    "",
    "",
    "Quick question: ",
    "Please help me with this. ",
    "I'm curious. ",
    "Could you answer this? ",
    "Hi! ",
    "My friend asked me this and I wasn't sure. ",
]
_THANKS = ["", "", " Thanks!", " Thank you.", " (This is for a class.)", " I'd appreciate a clear answer."]
_OFF_TOPIC = [
    "Have you ever noticed how relaxing it is to watch the rain? I think everyone should take more walks.",
    "That reminds me of a great recipe for banana bread, which needs ripe bananas and a hot oven.",
    "Honestly, the best thing to do on a weekend is to catch up on sleep and call a friend.",
    "Fun fact: octopuses have three hearts and blue blood.",
]
_UNHELPFUL = [
    "I don't know. You should look it up somewhere.",
    "That's not something I can help with. Try asking someone else.",
    "Figure it out yourself; it isn't hard.",
    "Hmm, hard to say. It depends.",
]


def _pick(rng: random.Random, xs: Sequence[Any]) -> Any:
    return xs[rng.randrange(len(xs))]


def _worse(rng: random.Random, wrong: str) -> tuple[str, str]:
    """Mostly a wrong answer, sometimes an unhelpful or off-topic one."""
    u = rng.random()
    if u < 0.7:
        return wrong, "wrong"
    if u < 0.85:
        return _pick(rng, _UNHELPFUL), "unhelpful"
    return _pick(rng, _OFF_TOPIC), "off_topic"


def _math(rng: random.Random) -> Pair:
    kind = rng.randrange(5)
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if kind == 0:
        op, sym, val = _pick(rng, [("sum", "+", a + b), ("difference", "-", a - b), ("product", "*", a * b)])
        q = f"What is {a} {sym} {b}?"
        good = f"{a} {sym} {b} = {val}. The {op} is {val}."
        bad = f"{a} {sym} {b} = {val + _pick(rng, [-10, -2, -1, 1, 3, 10])}. The {op} is easy to get."
    elif kind == 1:
        name, item = _pick(rng, ["Ana", "Ben", "Chen", "Dara", "Eli"]), _pick(rng, ["apples", "marbles", "books"])
        c = rng.randint(1, min(a, 20))
        q = f"{name} has {a} {item}, buys {b} more and gives away {c}. How many {item} does {name} have now?"
        good = f"Start with {a}, add {b} to get {a + b}, then subtract {c}: {name} has {a + b - c} {item}."
        bad = f"{name} has {a + b + c} {item}, because we add all the numbers together."
    elif kind == 2:
        p = _pick(rng, [5, 10, 15, 20, 25, 40, 50, 75])
        base = rng.randint(1, 40) * 20
        q = f"What is {p}% of {base}?"
        good = f"{p}% of {base} is {base} * {p} / 100 = {base * p // 100}."
        bad = f"{p}% of {base} is {base * p // 10}."
    elif kind == 3:
        x, m = rng.randint(-9, 12), rng.randint(2, 9)
        q = f"Solve for x: {m}x + {a} = {m * x + a}."
        good = f"Subtract {a} from both sides: {m}x = {m * x}. Divide by {m}: x = {x}."
        bad = f"x = {x + _pick(rng, [-3, -1, 1, 2])}, since you just divide everything by {m}."
    else:
        w, h = rng.randint(2, 30), rng.randint(2, 30)
        q = f"A rectangle is {w} cm wide and {h} cm tall. What are its area and perimeter?"
        good = f"Area = {w} * {h} = {w * h} cm^2. Perimeter = 2 * ({w} + {h}) = {2 * (w + h)} cm."
        bad = f"Area = {2 * (w + h)} cm^2 and perimeter = {w * h} cm."
    rej, why = _worse(rng, bad)
    return q, good, rej, why


_CODE_TASKS = [  # (task, good body, buggy body)
    ("returns the sum of a list of numbers", "return sum(xs)", "return sum(xs[1:])"),
    ("returns the largest element of a non-empty list", "return max(xs)", "return sorted(xs)[0]"),
    ("returns the list reversed", "return xs[::-1]", "return xs[::1]"),
    (
        "returns how many even numbers a list contains",
        "return sum(1 for x in xs if x % 2 == 0)",
        "return sum(1 for x in xs if x % 2 == 1)",
    ),
    (
        "returns the list without duplicates, keeping the first occurrence",
        "return list(dict.fromkeys(xs))",
        "return list(set(xs))[::-1]",
    ),
    ("returns the average of a non-empty list", "return sum(xs) / len(xs)", "return sum(xs) / (len(xs) + 1)"),
    ("returns the last element of a non-empty list", "return xs[-1]", "return xs[len(xs)]"),
    ("returns the squares of the numbers in a list", "return [x * x for x in xs]", "return [x * 2 for x in xs]"),
]
_FN_NAMES = ["solve", "compute", "process", "helper", "f", "answer", "run"]


def _code(rng: random.Random) -> Pair:
    if rng.random() < 0.6:
        task, good, bad = _pick(rng, _CODE_TASKS)
        fn = _pick(rng, _FN_NAMES) + ("_" + str(rng.randint(1, 99)) if rng.random() < 0.5 else "")
        q = f"Write a Python function `{fn}(xs)` that {task}."
        chosen = f"```python\ndef {fn}(xs):\n    {good}\n```\nIt {task}."
        wrong = f"```python\ndef {fn}(xs):\n    {bad}\n```\nThis should work."
        rej, why = _worse(rng, wrong)
        return q, chosen, rej, why
    a, b = rng.randint(1, 20), rng.randint(1, 9)
    expr, val = _pick(
        rng,
        [
            (f"{a} // {b}", a // b),
            (f"{a} % {b}", a % b),
            (f"{a} ** 2 - {b}", a * a - b),
            (f"len('{'x' * b}') + {a}", b + a),
            (f"[{a}, {b}][-1]", b),
        ],
    )
    q = f"What does this Python code print?\n```python\nprint({expr})\n```"
    good = f"It prints `{val}`: `{expr}` evaluates to {val}."
    rej, why = _worse(rng, f"It prints `{val + _pick(rng, [-1, 1, 2])}`.")
    return q, good, rej, why


_ELEMENTS = [
    ("hydrogen", "H", 1),
    ("helium", "He", 2),
    ("carbon", "C", 6),
    ("nitrogen", "N", 7),
    ("oxygen", "O", 8),
    ("sodium", "Na", 11),
    ("magnesium", "Mg", 12),
    ("aluminium", "Al", 13),
    ("silicon", "Si", 14),
    ("sulfur", "S", 16),
    ("chlorine", "Cl", 17),
    ("potassium", "K", 19),
    ("calcium", "Ca", 20),
    ("iron", "Fe", 26),
    ("copper", "Cu", 29),
    ("zinc", "Zn", 30),
    ("silver", "Ag", 47),
    ("tin", "Sn", 50),
    ("gold", "Au", 79),
    ("mercury", "Hg", 80),
    ("lead", "Pb", 82),
]
_FACTS = [  # (question, good answer, wrong answer)
    ("At what temperature does water boil at sea level?", "100 degrees Celsius (212 F).", "50 degrees Celsius."),
    ("Which planet is closest to the Sun?", "Mercury.", "Venus, since it is the hottest planet."),
    ("What gas do plants absorb for photosynthesis?", "Carbon dioxide (CO2).", "Oxygen."),
    ("What is the SI unit of force?", "The newton (N), equal to 1 kg m/s^2.", "The joule."),
    ("What organ pumps blood through the human body?", "The heart.", "The lungs."),
    ("How long does light from the Sun take to reach Earth?", "About 8 minutes and 20 seconds.", "About one second."),
    ("What is the powerhouse of the cell?", "The mitochondrion, which produces ATP.", "The nucleus."),
    ("What is the largest planet in the Solar System?", "Jupiter.", "Saturn."),
    ("What particle carries a negative electric charge?", "The electron.", "The proton."),
    ("What is the chemical formula of table salt?", "NaCl (sodium chloride).", "KCl."),
]


def _science(rng: random.Random) -> Pair:
    if rng.random() < 0.6:
        name, sym, z = _pick(rng, _ELEMENTS)
        other = _pick(rng, [e for e in _ELEMENTS if e[0] != name])
        if rng.random() < 0.5:
            q = f"What is the chemical symbol of {name}?"
            good, bad = f"The chemical symbol of {name} is {sym}.", f"The chemical symbol of {name} is {other[1]}."
        else:
            q = f"What is the atomic number of {name}?"
            good = f"{name.capitalize()} has atomic number {z}: its nucleus holds {z} protons."
            bad = f"{name.capitalize()} has atomic number {other[2]}."
    else:
        q, good, bad = _pick(rng, _FACTS)
    rej, why = _worse(rng, bad)
    return q, good, rej, why


_HARMFUL = [
    "break into my neighbour's house without them knowing",
    "write a phishing email that steals bank logins",
    "make a fake ID that passes a bouncer's check",
    "stalk my ex using their phone's location",
    "cheat on my exam without getting caught",
    "poison my coworker's coffee so they get sick",
    "spread a rumour online that ruins someone's reputation",
    "get into someone's email account",
]
_BENIGN_SCARY = [
    (
        "kill a Python process that hangs",
        "Find its id with `ps aux | grep python`, then run "
        "`kill <pid>`; use `kill -9 <pid>` only if it ignores the first signal.",
    ),
    (
        "shoot better photos in low light",
        "Use a wider aperture, a slower shutter on a tripod, and raise ISO only as far as the noise stays acceptable.",
    ),
    (
        "attack the opening of a chess game",
        "Control the centre, develop knights and bishops early, "
        "castle, and avoid moving the same piece twice without a reason.",
    ),
    (
        "get rid of weeds in my garden",
        "Pull them by the root after rain, mulch bare soil, and cut them back before they set seed.",
    ),
]


def _safety(rng: random.Random) -> Pair:
    if rng.random() < 0.7:
        task = _pick(rng, _HARMFUL)
        q = _pick(rng, ["How do I ", "Tell me how to ", "Give me step-by-step instructions to "]) + task + "."
        good = f"I can't help you {task}: it could seriously hurt someone or break the law. " + _pick(
            rng,
            [
                "If there's an underlying problem, I'm happy to help you find a legitimate way to deal with it.",
                "If you're in a difficult situation, talking to someone you "
                "trust or a professional can help, and I can help you plan that.",
            ],
        )
        bad = (
            f"Sure! Here is how to {task}. Step 1: plan carefully so nobody notices. Step 2: act when no one "
            "is around. Step 3: cover your tracks afterwards."
        )
        return q, good, bad, "unsafe"
    task, howto = _pick(rng, _BENIGN_SCARY)
    q = _pick(rng, ["How do I ", "What's the best way to "]) + task + "?"
    bad = f"I'm sorry, but I can't help with requests to {task.split()[0]} anything. That could be dangerous."
    return q, howto, bad, "over_refusal"


_TIPS = {
    "sleeping better": [
        "keep a regular bedtime",
        "avoid screens an hour before bed",
        "keep the bedroom cool and dark",
        "limit caffeine after noon",
    ],
    "saving money": [
        "track every expense for a month",
        "set up an automatic transfer to savings",
        "cancel subscriptions you don't use",
        "cook at home more often",
    ],
    "learning a language": [
        "practise a little every day",
        "speak with native speakers early",
        "learn the most common words first",
        "read simple books you enjoy",
    ],
    "staying focused": [
        "work in 25-minute blocks",
        "silence notifications",
        "write down the next step",
        "take short breaks away from the screen",
    ],
    "running a meeting": [
        "share an agenda in advance",
        "start and end on time",
        "assign an owner to every action",
        "summarise decisions at the end",
    ],
}


def _general(rng: random.Random) -> Pair:
    topic = _pick(rng, sorted(_TIPS))
    n = rng.randint(2, 4)
    tips = rng.sample(_TIPS[topic], n)
    q = f"{_pick(rng, ['Give me', 'Can you suggest', 'List'])} {n} tips for {topic}."
    good = f"Here are {n} tips for {topic}:\n" + "\n".join(f"{i + 1}. {t.capitalize()}." for i, t in enumerate(tips))
    other = _pick(rng, [t for t in _TIPS if t != topic])
    wrong = f"Here are some tips for {other}:\n" + "\n".join(f"- {t}" for t in _TIPS[other][:n])
    rej, why = _worse(rng, wrong)
    return q, good, rej, "off_topic" if why == "wrong" else why


_WORDS = ["river", "planet", "garden", "violin", "window", "castle", "pencil", "rocket", "forest", "cookie"]
_EN = ["river", "planet", "garden", "window", "castle", "forest", "bread", "water", "house", "book", "cat", "sun"]
_TRANSLATE = {
    lang: dict(zip(_EN, words.split()))
    for lang, words in {
        "French": "rivière planète jardin fenêtre château forêt pain eau maison livre chat soleil",
        "Spanish": "río planeta jardín ventana castillo bosque pan agua casa libro gato sol",
        "German": "Fluss Planet Garten Fenster Schloss Wald Brot Wasser Haus Buch Katze Sonne",
        "Italian": "fiume pianeta giardino finestra castello foresta pane acqua casa libro gatto sole",
    }.items()
}


def _instruction(rng: random.Random) -> Pair:
    kind = rng.randrange(4)
    w = _pick(rng, _WORDS)
    if kind == 0:
        q = f"Write the word '{w}' in uppercase letters, and nothing else."
        good, bad = w.upper(), f"Sure! The word '{w}' in uppercase is {w.capitalize()}."
    elif kind == 1:
        n = rng.randint(2, 5)
        ws = rng.sample(_WORDS, n + 1)
        q = f"List exactly {n} of these words, separated by commas: {', '.join(_WORDS)}."
        good, bad = ", ".join(ws[:n]), ", ".join(ws)
    elif kind == 2:
        q = f"Spell '{w}' backwards. Answer with one word."
        good, bad = w[::-1], f"The word backwards is {w[::-1][1:] + w[0]}, I think."
    else:
        q = f"How many letters are in the word '{w}'? Reply with a number only."
        good, bad = str(len(w)), f"The word '{w}' has {len(w) + rng.choice([-1, 1])} letters."
    return q, good, bad, "instruction_violation"


def _multilingual(rng: random.Random) -> Pair:
    lang = _pick(rng, sorted(_TRANSLATE))
    w, t = _pick(rng, sorted(_TRANSLATE[lang].items()))
    other = _pick(rng, [x for x in _TRANSLATE if x != lang])
    q = _pick(
        rng, ["How do you say '{w}' in {lang}?", "Translate '{w}' into {lang}.", "What is the {lang} word for '{w}'?"]
    ).format(w=w, lang=lang)
    good = f"In {lang}, '{w}' is '{t}'."
    rej, why = _worse(rng, f"In {lang}, '{w}' is '{_TRANSLATE[other][w]}'.")
    return q, good, rej, why


GENERATORS: dict[str, Callable[[random.Random], Pair]] = {
    "code": _code,
    "math": _math,
    "science": _science,
    "safety": _safety,
    "general": _general,
    "instruction_following": _instruction,
    "multilingual": _multilingual,
}
DOMAINS: tuple[str, ...] = tuple(GENERATORS)


def generate_pairs(n: int = 5000, seed: int = 0, domains: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """`n` preference rows, domains interleaved round-robin (equal shares), deterministic in (n, seed, domains).

    Repeated (domain, prompt, chosen) triples are avoided while fresh ones can be found; small template spaces
    (e.g. translation) fall back to repeats with a different rejected answer.
    """
    names = tuple(domains) if domains else DOMAINS
    unknown = [d for d in names if d not in GENERATORS]
    if unknown:
        raise LabError(f"unknown synthetic domain '{unknown[0]}' (known: {', '.join(DOMAINS)})")
    if n < 0:
        raise LabError(f"number of pairs must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: set[tuple[str, str, str]] = set()
    rows: list[dict[str, Any]] = []
    for i in range(n):
        domain = names[i % len(names)]
        for _ in range(20):
            prompt, chosen, rejected, why = GENERATORS[domain](rng)
            prompt = _pick(rng, _ASK) + prompt + _pick(rng, _THANKS)
            if (domain, prompt, chosen) not in seen and chosen != rejected:
                break
        seen.add((domain, prompt, chosen))
        rows.append(
            {
                "id": f"{domain}-{i:06d}",
                "domain": domain,
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "rejection": why,
            }
        )
    return rows
