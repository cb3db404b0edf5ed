"""A seeded generator of templated preference pairs across labelled domains (no downloads, no models).

`generate_pairs(n, seed)` returns rows `{id, domain, prompt, chosen, rejected, rejection}`: `chosen` is a correct,
helpful answer; `rejected` a worse one (wrong, unhelpful, off-topic, unsafe compliance, over-refusal or a violated
instruction; the kind is in `rejection`). The same (n, seed, domains) always gives the same rows. Rows are plain
strings; `training.preference.data.to_conversational` turns them into chat messages. The word and fact banks the templates
draw from are in training/preference/synthetic_banks.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from lab.errors import LabError
from training.preference.synthetic_banks import (
    ASK,
    BENIGN_SCARY,
    CODE_TASKS,
    ELEMENTS,
    FACTS,
    FN_NAMES,
    HARMFUL,
    OFF_TOPIC,
    THANKS,
    TIPS,
    TRANSLATE,
    UNHELPFUL,
    WORDS,
)

Pair = tuple[str, str, str, str]  # prompt, chosen, rejected, rejection kind


def _pick(rng: random.Random, xs: Sequence[Any]) -> Any:
    return xs[rng.randrange(len(xs))]


def _worse(rng: random.Random, wrong: str) -> tuple[str, str]:
    """Mostly a wrong answer, sometimes an unhelpful or off-topic one."""
    u = rng.random()
    if u < 0.7:
        return wrong, "wrong"
    if u < 0.85:
        return _pick(rng, UNHELPFUL), "unhelpful"
    return _pick(rng, OFF_TOPIC), "off_topic"


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


def _code(rng: random.Random) -> Pair:
    if rng.random() < 0.6:
        task, good, bad = _pick(rng, CODE_TASKS)
        fn = _pick(rng, FN_NAMES) + ("_" + str(rng.randint(1, 99)) if rng.random() < 0.5 else "")
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


def _science(rng: random.Random) -> Pair:
    if rng.random() < 0.6:
        name, sym, z = _pick(rng, ELEMENTS)
        other = _pick(rng, [e for e in ELEMENTS if e[0] != name])
        if rng.random() < 0.5:
            q = f"What is the chemical symbol of {name}?"
            good, bad = f"The chemical symbol of {name} is {sym}.", f"The chemical symbol of {name} is {other[1]}."
        else:
            q = f"What is the atomic number of {name}?"
            good = f"{name.capitalize()} has atomic number {z}: its nucleus holds {z} protons."
            bad = f"{name.capitalize()} has atomic number {other[2]}."
    else:
        q, good, bad = _pick(rng, FACTS)
    rej, why = _worse(rng, bad)
    return q, good, rej, why


def _safety(rng: random.Random) -> Pair:
    if rng.random() < 0.7:
        task = _pick(rng, HARMFUL)
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
    task, howto = _pick(rng, BENIGN_SCARY)
    q = _pick(rng, ["How do I ", "What's the best way to "]) + task + "?"
    bad = f"I'm sorry, but I can't help with requests to {task.split()[0]} anything. That could be dangerous."
    return q, howto, bad, "over_refusal"


def _general(rng: random.Random) -> Pair:
    topic = _pick(rng, sorted(TIPS))
    n = rng.randint(2, 4)
    tips = rng.sample(TIPS[topic], n)
    q = f"{_pick(rng, ['Give me', 'Can you suggest', 'List'])} {n} tips for {topic}."
    good = f"Here are {n} tips for {topic}:\n" + "\n".join(f"{i + 1}. {t.capitalize()}." for i, t in enumerate(tips))
    other = _pick(rng, [t for t in TIPS if t != topic])
    wrong = f"Here are some tips for {other}:\n" + "\n".join(f"- {t}" for t in TIPS[other][:n])
    rej, why = _worse(rng, wrong)
    return q, good, rej, "off_topic" if why == "wrong" else why


def _instruction(rng: random.Random) -> Pair:
    kind = rng.randrange(4)
    w = _pick(rng, WORDS)
    if kind == 0:
        q = f"Write the word '{w}' in uppercase letters, and nothing else."
        good, bad = w.upper(), f"Sure! The word '{w}' in uppercase is {w.capitalize()}."
    elif kind == 1:
        n = rng.randint(2, 5)
        ws = rng.sample(WORDS, n + 1)
        q = f"List exactly {n} of these words, separated by commas: {', '.join(WORDS)}."
        good, bad = ", ".join(ws[:n]), ", ".join(ws)
    elif kind == 2:
        q = f"Spell '{w}' backwards. Answer with one word."
        good, bad = w[::-1], f"The word backwards is {w[::-1][1:] + w[0]}, I think."
    else:
        q = f"How many letters are in the word '{w}'? Reply with a number only."
        good, bad = str(len(w)), f"The word '{w}' has {len(w) + rng.choice([-1, 1])} letters."
    return q, good, bad, "instruction_violation"


def _multilingual(rng: random.Random) -> Pair:
    lang = _pick(rng, sorted(TRANSLATE))
    w, t = _pick(rng, sorted(TRANSLATE[lang].items()))
    other = _pick(rng, [x for x in TRANSLATE if x != lang])
    q = _pick(
        rng, ["How do you say '{w}' in {lang}?", "Translate '{w}' into {lang}.", "What is the {lang} word for '{w}'?"]
    ).format(w=w, lang=lang)
    good = f"In {lang}, '{w}' is '{t}'."
    rej, why = _worse(rng, f"In {lang}, '{w}' is '{TRANSLATE[other][w]}'.")
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
            prompt = _pick(rng, ASK) + prompt + _pick(rng, THANKS)
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
