"""Probes beyond yes/no, scored from next-token logits (deterministic, no judge).

- Localisation: N numbered neutral sentences; the concept vector is added on the tokens of one sentence only; the
  answer is prefilled up to "… in sentence" and the prediction is the argmax over the logits of the tokens " 1" … " N".
  Chance = 1/N (targets are balanced over positions, so a fixed position bias scores exactly chance).
- Strength discrimination: two passages A and B; the same vector is added on A's tokens at one strength and on B's at
  another (weak = strong × fraction, fraction 0 = one passage untouched); prediction = argmax over " A" / " B" after
  "… in passage". Chance = 1/2.
Both run with the concept vector (`injection`), with vector controls (`random`: a random direction with the typical
concept-vector norm; `norm_matched`: a random direction with this concept vector's norm — derived exactly as in
`lab.runner.VectorBank`) and with no injection at all (`control`, which shows the answer bias).

`inject_span` adds a vector on token positions [start, end) only (per row); two contexts on the same block compose.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lab.errors import LabError
from lab.steering import inject

PROBE_VERSION = 1
PROBES = ("localisation", "discrimination")
KINDS = ("injection", "control", "random", "norm_matched")

SENTENCES = (
    "The train left the station a few minutes after noon.",
    "She folded the letter and put it in the drawer.",
    "The meeting was moved from Tuesday to Thursday.",
    "A small table stood next to the window.",
    "He wrote the numbers down on a sheet of paper.",
    "The road turns left just after the second bridge.",
    "They painted the fence during the long weekend.",
    "The shop closes an hour earlier in winter.",
    "Two chairs were missing from the back row.",
    "The report was printed on both sides of the page.",
)

LOCALISATION = dict(
    preamble=("I am an interpretability researcher. I can inject activation patterns (\"thoughts\") about a concept "
              "into your neural network while you read. Below are {n} numbered sentences. While you read exactly one "
              "of them, I injected a thought."),
    question="Which sentence carried the injected thought? Answer with the sentence number only.",
    answer="The injected thought was in sentence",
)
DISCRIMINATION = dict(
    preamble=("I am an interpretability researcher. I can inject activation patterns (\"thoughts\") about a concept "
              "into your neural network while you read. Below are two passages, A and B. I injected a thought while "
              "you read them, stronger in one passage than in the other."),
    question="Which passage carried the stronger injected thought? Answer with the letter A or B only.",
    answer="The stronger thought was in passage",
)


# ---------------------------------------------------------------------------------------------------------------
# span injection


def inject_span(model: Any, layer: int, vectors: torch.Tensor, strengths: torch.Tensor | Sequence[float] | float,
                starts: torch.Tensor | Sequence[int] | int, ends: torch.Tensor | Sequence[int] | int
                ) -> AbstractContextManager[dict[str, int]]:
    """`lab.steering.inject` on a span: positions in [starts[b], ends[b]) only. Nest two on one block for two spans."""
    return inject(model, layer, vectors, strengths, starts, ends)


# ---------------------------------------------------------------------------------------------------------------
# prompts


@dataclass(frozen=True)
class ProbePrompt:
    text: str
    spans: tuple[tuple[int, int], ...]  # character spans of the candidate sentences / passages, in answer order
    labels: tuple[str, ...]             # " 1" … " N" or " A", " B": the continuations scored after `text`


def _wrap(lm: Any, user: str, answer: str) -> str:
    if lm.spec.chat_template and lm.tokenizer.chat_template is not None:
        return lm.chat([{"role": "user", "content": user}], add_generation_prompt=True) + answer
    return f"User: {user}\n\nAssistant: {answer}"


def localisation_prompt(lm: Any, sentences: Sequence[str]) -> ProbePrompt:
    body = "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, 1))
    user = f"{LOCALISATION['preamble'].format(n=len(sentences))}\n\n{body}\n\n{LOCALISATION['question']}"
    text = _wrap(lm, user, LOCALISATION["answer"])
    return ProbePrompt(text, _find(text, [f"{i}. {s}" for i, s in enumerate(sentences, 1)], skip=3),
                       tuple(f" {i}" for i in range(1, len(sentences) + 1)))


def discrimination_prompt(lm: Any, passage_a: str, passage_b: str) -> ProbePrompt:
    user = (f"{DISCRIMINATION['preamble']}\n\nPassage A: {passage_a}\n\nPassage B: {passage_b}\n\n"
            f"{DISCRIMINATION['question']}")
    text = _wrap(lm, user, DISCRIMINATION["answer"])
    return ProbePrompt(text, _find(text, [f"Passage A: {passage_a}", f"Passage B: {passage_b}"], skip=11),
                       (" A", " B"))


def _find(text: str, items: Sequence[str], skip: int) -> tuple[tuple[int, int], ...]:
    """Char spans of each item's text after its `skip`-character label ("1. ", "Passage A: "), searched in order."""
    out, pos = [], 0
    for it in items:
        i = text.find(it, pos)
        if i < 0:
            raise LabError(f"probe prompt lost the item {it[:30]!r}")
        label = len(it.split(" ", 1)[0]) + 1 if skip == 3 else skip
        out.append((i + label, i + len(it)))
        pos = i + len(it)
    return tuple(out)


def token_spans(tokenizer: Any, text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of `text` and, per char span, the token range [first, last+1) of the tokens that overlap it."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offs = list(enc["input_ids"]), enc["offset_mapping"]
    out = []
    for cs, ce in spans:
        toks = [i for i, (s, e) in enumerate(offs) if s < ce and e > cs]
        if not toks:
            raise LabError("a probe span covers no token")
        out.append((toks[0], toks[-1] + 1))
    return ids, out


def label_token_ids(tokenizer: Any, text: str, labels: Sequence[str]) -> tuple[list[int], list[int]]:
    """How to score `labels` as continuations of `text` from one next-token distribution.

    Returns (common, first): the tokens all labels' continuations share (e.g. a lone space token, for tokenizers that
    split " 1" into " " + "1"), to be appended to the prompt, and per label the first token after them (distinct).
    """
    base = tokenizer(text, add_special_tokens=False)["input_ids"]
    conts = []
    for lab in labels:
        full = tokenizer(text + lab, add_special_tokens=False)["input_ids"]
        if full[:len(base)] != base or len(full) <= len(base):
            raise LabError(f"label {lab!r} does not tokenize as a continuation of the answer prefix")
        conts.append(full[len(base):])
    common: list[int] = []
    while all(len(c) > len(common) + 1 for c in conts) and len({c[len(common)] for c in conts}) == 1:
        common.append(conts[0][len(common)])
    first = [c[len(common)] for c in conts]
    if len(set(first)) != len(first):
        raise LabError(f"labels {list(labels)} share a first token; cannot score them from logits")
    return common, first


# ---------------------------------------------------------------------------------------------------------------
# trials and scoring


@dataclass(frozen=True)
class ProbeTrial:
    probe: Literal["localisation", "discrimination"]
    concept: str
    layer: int
    strength: float        # the (stronger) configured strength
    weak_fraction: float   # discrimination: the weaker passage gets strength × this; localisation: 0
    kind: str              # injection | control | random | norm_matched
    target: int            # 0-based index of the correct label
    repeat: int            # which sentence draw
    seed: int = 0


@dataclass(frozen=True)
class ProbeSettings:
    concepts: tuple[str, ...]
    layers: tuple[int, ...]
    strengths: tuple[float, ...]
    strength_mode: str = "relative"
    probes: tuple[str, ...] = PROBES
    kinds: tuple[str, ...] = KINDS
    n_sentences: int = 5
    weak_fractions: tuple[float, ...] = (0.0, 0.5)
    repeats: int = 1
    seed: int = 0


def expand(s: ProbeSettings) -> list[ProbeTrial]:
    out = []
    for c in s.concepts:
        for layer in s.layers:
            for st in s.strengths:
                for r in range(s.repeats):
                    for kind in s.kinds:
                        if "localisation" in s.probes:
                            out += [ProbeTrial("localisation", c, layer, st, 0.0, kind, k, r, s.seed)
                                    for k in range(s.n_sentences)]
                        if "discrimination" in s.probes:
                            out += [ProbeTrial("discrimination", c, layer, st, f, kind, k, r, s.seed)
                                    for f in s.weak_fractions for k in range(2)]
    return out


def draw_sentences(repeat: int, n: int, seed: int) -> list[str]:
    return random.Random(f"{seed}|{repeat}|{n}").sample(list(SENTENCES), n)


@dataclass
class Request:
    ids: list[int]
    spans: list[tuple[int, int]]   # token spans that get vector × strength_of_span
    span_raw: list[float]          # raw multiplier per span
    vector: torch.Tensor | None
    layer: int
    label_ids: list[int]


def build_request(lm: Any, bank: Any, t: ProbeTrial, n_sentences: int, strength_mode: str) -> Request:
    """The prompt, the token spans and the raw multipliers of one probe trial (vectors from a `VectorBank`)."""
    from lab.trials import make_trial

    if t.probe == "localisation":
        p = localisation_prompt(lm, draw_sentences(t.repeat, n_sentences, t.seed))
    else:
        a, b, c, d = draw_sentences(t.repeat, 4, t.seed)
        p = discrimination_prompt(lm, f"{a} {b}", f"{c} {d}")
    ids, spans = token_spans(lm.tokenizer, p.text, p.spans)
    common, labels = label_token_ids(lm.tokenizer, p.text, p.labels)
    ids = ids + common
    carrier = make_trial(model=lm.name, concept=t.concept, layer=t.layer, strength=t.strength,
                         strength_mode=strength_mode, kind=t.kind, trial_number=t.repeat + 1, sample=0, forced=False,
                         prompt_variant=f"probe-{t.probe}", dialogue_format="probe", seed=t.seed, max_new_tokens=1,
                         temperature=0.0)
    raw = bank.strengths(carrier)[0]
    if raw <= 0:
        return Request(ids, [], [], None, t.layer, labels)
    vec = bank.vector(carrier)
    if t.probe == "localisation":
        return Request(ids, [spans[t.target]], [raw], vec, t.layer, labels)
    weak = 1 - t.target  # the target passage gets the stronger injection
    return Request(ids, [spans[t.target], spans[weak]], [raw, raw * t.weak_fraction], vec, t.layer, labels)


@torch.no_grad()
def score(lm: Any, reqs: Sequence[Request]) -> list[list[float]]:
    """Next-token logits of each request's labels (one left-padded forward per batch)."""
    tok, model = lm.tokenizer, lm.model
    width = max(len(r.ids) for r in reqs)
    pad = [width - len(r.ids) for r in reqs]
    dev = lm.device
    input_ids = torch.tensor([[tok.pad_token_id] * p + r.ids for p, r in zip(pad, reqs)], device=dev)
    mask = torch.tensor([[0] * p + [1] * len(r.ids) for p, r in zip(pad, reqs)], device=dev)
    d = lm.spec.d_model or model.config.hidden_size
    with ExitStack() as stack:
        n_spans = max((len(r.spans) for r in reqs), default=0)
        for layer in sorted({r.layer for r in reqs if r.vector is not None}):
            rows = [r.vector is not None and r.layer == layer for r in reqs]
            vecs = torch.stack([r.vector if on else torch.zeros(d) for r, on in zip(reqs, rows)])
            for j in range(n_spans):
                has = [on and j < len(r.spans) for r, on in zip(reqs, rows)]
                stack.enter_context(inject_span(
                    model, layer, vecs, [r.span_raw[j] if h else 0.0 for r, h in zip(reqs, has)],
                    [p + r.spans[j][0] if h else 0 for p, r, h in zip(pad, reqs, has)],
                    [p + r.spans[j][1] if h else 0 for p, r, h in zip(pad, reqs, has)]))
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, -1, :].float().cpu()
    return [[float(logits[i, j]) for j in r.label_ids] for i, r in enumerate(reqs)]


def run(lm: Any, bank: Any, settings: ProbeSettings, batch_size: int = 16, progress: bool = False
        ) -> list[dict[str, Any]]:
    """Score every probe trial; one row per trial (trial fields, label logits, prediction, correct, p_target)."""
    from tqdm.auto import tqdm

    trials = expand(settings)
    reqs = [build_request(lm, bank, t, settings.n_sentences, settings.strength_mode) for t in trials]
    rows: list[dict[str, Any]] = []
    # requests that inject nothing (the no-injection controls of every concept) are the same forward: score once
    keys = [(tuple(r.ids), tuple(r.label_ids)) if r.vector is None else (i,) for i, r in enumerate(reqs)]
    first: dict[Any, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    order = sorted(set(first.values()), key=lambda i: len(reqs[i].ids))
    logits: dict[int, list[float]] = {}
    bar = tqdm(total=len(order), desc="probe forwards", unit="row", disable=not progress)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        logits.update(zip(idx, score(lm, [reqs[i] for i in idx])))
        bar.update(len(idx))
    bar.close()
    for i, (t, r) in enumerate(zip(trials, reqs)):
        lg = torch.tensor(logits[first[keys[i]]])
        pred = int(lg.argmax())
        rows.append({**t.__dict__, "n_choices": len(lg), "chance": 1 / len(lg), "prediction": pred,
                     "correct": pred == t.target, "p_target": float(lg.softmax(0)[t.target]),
                     "label_logits": [float(x) for x in lg], "strength_raw": r.span_raw[0] if r.span_raw else 0.0,
                     "prompt_tokens": len(r.ids), "probe_version": PROBE_VERSION})
    return rows


def summarize(df: Any, by: Sequence[str]) -> Any:
    """Accuracy with Wilson 95 % CI per group, chance, mean p(target) and the share of the most common answer."""
    import pandas as pd

    from lab.metrics import wilson

    out = []
    for key, g in df.groupby(list(by), sort=True):
        k, n = int(g["correct"].sum()), len(g)
        p, lo, hi = wilson(k, n)
        out.append(dict(zip(by, key if isinstance(key, tuple) else (key,))) | {
            "accuracy": p, "accuracy_lo": lo, "accuracy_hi": hi, "n": n, "chance": float(g["chance"].mean()),
            "p_target": float(g["p_target"].mean()),
            "top_answer_share": float(g["prediction"].value_counts(normalize=True).iloc[0])})
    return pd.DataFrame(out)
