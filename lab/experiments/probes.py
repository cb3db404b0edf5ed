"""Probes beyond yes/no, scored from next-token logits (deterministic, no judge).

- Localisation: N numbered neutral sentences; the concept vector is added on the tokens of one sentence only; the
  answer is prefilled up to "… in sentence" and the prediction is the argmax over the logits of the tokens " 1" … " N".
  Chance = 1/N (targets are balanced over positions, so a fixed position bias scores exactly chance).
- Strength discrimination: two passages A and B; the same vector is added on A's tokens at one strength and on B's at
  another (weak = strong × fraction, fraction 0 = one passage untouched); prediction = argmax over " A" / " B" after
  "… in passage". Chance = 1/2.
Both run with the concept vector (`injection`), with vector controls (`random`: a random direction with the typical
concept-vector norm; `norm_matched`: a random direction with this concept vector's norm — derived exactly as in
`lab.generate.runner.VectorBank`) and with no injection at all (`control`, which shows the answer bias).

Spans are `lab.steer.injection.Injection`s with per-row start/end; two on the same block compose.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from lab.config import ModelConfig, check_strength
from lab.errors import LabError
from lab.protocol.probe_prompts import (
    SENTENCES,
    discrimination_prompt,
    label_token_ids,
    localisation_prompt,
    token_spans,
)
from lab.reporting.tables import interval, print_table
from lab.run.tracking import TrackingConfig
from lab.steer.concepts import DEFAULT_TEMPLATE
from lab.steer.injection import Injection

if TYPE_CHECKING:
    from lab.model.loading import LoadedModel

PROBE_VERSION = 1
PROBES = ("localisation", "discrimination")
KINDS = ("injection", "control", "random", "norm_matched")

# ---------------------------------------------------------------------------------------------------------------
# trials and scoring


@dataclass(frozen=True)
class ProbeTrial:
    trial_id: str
    model: str
    probe: Literal["localisation", "discrimination"]
    concept: str
    layer: int
    strength: float  # the (stronger) configured strength
    strength_mode: str
    weak_fraction: float  # discrimination: the weaker passage gets strength × this; localisation: 0
    kind: str  # injection | control | random | norm_matched
    target: int  # 0-based index of the correct label
    repeat: int  # which sentence draw
    n_sentences: int
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


def _trial(**f: Any) -> ProbeTrial:
    from lab.protocol.trials import trial_id

    return ProbeTrial(trial_id=trial_id(probe_version=PROBE_VERSION, **f), **f)


def expand_probes(s: ProbeSettings, model: str) -> list[ProbeTrial]:
    """Every probe trial with a deterministic id (model, probe version and every field that sets the forward)."""
    out = []
    fixed = {"model": model, "strength_mode": s.strength_mode, "n_sentences": s.n_sentences, "seed": s.seed}
    for c, layer, st, r, kind in itertools.product(s.concepts, s.layers, s.strengths, range(s.repeats), s.kinds):
        common = fixed | {"concept": c, "layer": layer, "strength": st, "kind": kind, "repeat": r}
        if "localisation" in s.probes:
            out += [_trial(probe="localisation", weak_fraction=0.0, target=k, **common) for k in range(s.n_sentences)]
        if "discrimination" in s.probes:
            out += [
                _trial(probe="discrimination", weak_fraction=f, target=k, **common)
                for f in s.weak_fractions
                for k in range(2)
            ]
    return out


def draw_sentences(repeat: int, n: int, seed: int) -> list[str]:
    return random.Random(f"{seed}|{repeat}|{n}").sample(list(SENTENCES), n)


@dataclass
class ProbeRequest:
    """One probe trial made concrete: token ids, the spans that get the vector, their raw strengths, the labels."""

    ids: list[int]
    spans: list[tuple[int, int]]  # token spans that get vector × strength_of_span
    span_raw: list[float]  # raw multiplier per span
    vector: torch.Tensor | None
    layer: int
    label_ids: list[int]


def build_request(lm: LoadedModel, bank: Any, t: ProbeTrial) -> ProbeRequest:
    """The prompt, the token spans and the raw multipliers of one probe trial (vectors from a `VectorBank`)."""
    from lab.protocol.trials import make_trial

    if t.probe == "localisation":
        p = localisation_prompt(lm, draw_sentences(t.repeat, t.n_sentences, t.seed))
    else:
        a, b, c, d = draw_sentences(t.repeat, 4, t.seed)
        p = discrimination_prompt(lm, f"{a} {b}", f"{c} {d}")
    ids, spans = token_spans(lm.tokenizer, p.text, p.spans)
    common, labels = label_token_ids(lm.tokenizer, p.text, p.labels)
    ids = ids + common
    same = {k: getattr(t, k) for k in ("concept", "layer", "strength", "strength_mode", "kind", "seed")}
    fixed = {"sample": 0, "forced": False, "dialogue_format": "probe", "max_new_tokens": 1, "temperature": 0.0}
    carrier = make_trial(model=lm.name, trial_number=t.repeat + 1, prompt_variant=f"probe-{t.probe}", **same, **fixed)
    raw = bank.strengths(carrier)[0]
    if raw <= 0:
        return ProbeRequest(ids, [], [], None, t.layer, labels)
    vec = bank.vector(carrier)
    if t.probe == "localisation":
        return ProbeRequest(ids, [spans[t.target]], [raw], vec, t.layer, labels)
    weak = 1 - t.target  # the target passage gets the stronger injection
    return ProbeRequest(ids, [spans[t.target], spans[weak]], [raw, raw * t.weak_fraction], vec, t.layer, labels)


def span_edits(reqs: Sequence[ProbeRequest], pad: list[int]) -> list[Any]:
    """One `Add` per (layer, span slot): each row's vector × its span's multiplier on that span (shifted by its
    left padding); rows without that span get strength 0 there, which leaves them bit-identical."""
    out: list[Any] = []
    d = next((r.vector.numel() for r in reqs if r.vector is not None), 0)
    for j in range(max((len(r.spans) for r in reqs if r.vector is not None), default=0)):
        has = [r.vector is not None and j < len(r.spans) for r in reqs]
        out += [
            inj.op()
            for inj in Injection.per_layer(
                [r.layer for r in reqs],
                [r.vector if h else None for r, h in zip(reqs, has)],
                [r.span_raw[j] if h else 0.0 for r, h in zip(reqs, has)],
                [p + r.spans[j][0] if h else 0 for p, r, h in zip(pad, reqs, has)],
                d,
                [p + r.spans[j][1] if h else 0 for p, r, h in zip(pad, reqs, has)],
            )
        ]
    return out


def score_shard(lm: LoadedModel, shard: list[ProbeTrial], ctx: Any) -> list[dict[str, Any]]:
    """Score a shard of probe trials (`ctx`: a `lab.experiments.concept_injection.SweepContext` with the vector bank): one left-padded
    forward per batch; requests that inject nothing are the same forward and are scored once."""
    from lab.steer.readouts import forward

    reqs = [build_request(lm, ctx.bank, t) for t in shard]
    keys = [(tuple(r.ids), tuple(r.label_ids)) if r.vector is None else (i,) for i, r in enumerate(reqs)]
    first: dict[Any, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    order = sorted(set(first.values()), key=lambda i: len(reqs[i].ids))
    logits: dict[int, list[float]] = {}
    for b in range(0, len(order), ctx.batch_size):
        idx = order[b : b + ctx.batch_size]
        batch = [reqs[i] for i in idx]
        out = forward(lm, [r.ids for r in batch], lambda pad, batch=batch: span_edits(batch, pad))
        logits.update((i, [float(out.logits[k, j]) for j in r.label_ids]) for k, (i, r) in enumerate(zip(idx, batch)))
    rows: list[dict[str, Any]] = []
    for i, (t, r) in enumerate(zip(shard, reqs)):
        lg = torch.tensor(logits[first[keys[i]]])
        pred = int(lg.argmax())
        rows.append(
            {
                **t.__dict__,
                "n_choices": len(lg),
                "chance": 1 / len(lg),
                "prediction": pred,
                "correct": pred == t.target,
                "p_target": float(lg.softmax(0)[t.target]),
                "label_logits": [float(x) for x in lg],
                "strength_raw": r.span_raw[0] if r.span_raw else 0.0,
                "prompt_tokens": len(r.ids),
                "probe_version": PROBE_VERSION,
            }
        )
    return rows


def summarize_probes(df: Any, by: Sequence[str]) -> Any:
    """Accuracy with Wilson 95 % CI per group, chance, mean p(target) and the share of the most common answer."""
    import pandas as pd

    from lab.reporting.metrics import wilson

    out = []
    for key, g in df.groupby(list(by), sort=True):
        k, n = int(g["correct"].sum()), len(g)
        p, lo, hi = wilson(k, n)
        out.append(
            dict(zip(by, key if isinstance(key, tuple) else (key,)))
            | {
                "accuracy": p,
                "accuracy_lo": lo,
                "accuracy_hi": hi,
                "n": n,
                "chance": float(g["chance"].mean()),
                "p_target": float(g["p_target"].mean()),
                "top_answer_share": float(g["prediction"].value_counts(normalize=True).iloc[0]),
            }
        )
    return pd.DataFrame(out)


def print_summary(overall: Any) -> None:
    columns = [("probe", "{probe}"), ("kind", "{kind}"), ("accuracy [95% CI]", interval("accuracy", with_n=False))]
    columns += [
        ("chance", "{chance:>.2f}"),
        ("p(target)", "{p_target:>.3f}"),
        ("top-answer", "{top_answer_share:>.2f}"),
    ]
    print_table(overall, columns + [("n", "{n:>.0f}")])
    for _, r in overall[overall["kind"] == "injection"].iterrows():
        verdict = (
            "above"
            if r["accuracy_lo"] > r["chance"]
            else ("below" if r["accuracy_hi"] < r["chance"] else "not distinguishable from")
        )
        print(f"{r['probe']}: concept-vector accuracy is {verdict} chance ({r['chance']:.2f})")


# ---------------------------------------------------------------------------------------------------------------
# the probes job's config


@dataclass(frozen=True)
class ProbesConfig:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model to probe"})
    probes: tuple[str, ...] = field(
        default=("localisation", "discrimination"), metadata={"help": "localisation and/or discrimination"}
    )
    concepts: str | tuple[str, ...] = field(default="first:10", metadata={"help": "as sweep.concepts"})
    layers: tuple[int, ...] = field(default=(), metadata={"help": "empty = the model's defaults"})
    strengths: tuple[float, ...] = field(default=(), metadata={"help": "empty = the model's defaults"})
    strength_mode: Literal["raw", "relative", "default"] = field(
        default="default", metadata={"help": "as sweep.strength_mode; default: the model's registry mode"}
    )
    kinds: tuple[str, ...] = field(
        default=("injection", "control", "random", "norm_matched"),
        metadata={"help": "injection (concept vector), control (nothing injected), random, norm_matched"},
    )
    n_sentences: int = field(default=5, metadata={"help": "localisation: numbered sentences (2..9)"})
    weak_fractions: tuple[float, ...] = field(
        default=(0.0, 0.5),
        metadata={"help": "discrimination: weaker passage strength = strength × fraction (0 = untouched)"},
    )
    repeats: int = field(default=1, metadata={"help": "sentence draws per setting"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "concept-vector prompt"})
    baseline: str = field(default="baseline_words", metadata={"help": "word list whose mean concept vectors subtract"})
    seed: int = field(default=0, metadata={"help": "sentence draws and random-vector controls"})
    batch_size: int = field(default=16, metadata={"help": "prompts per forward pass"})
    threads: int = field(default=2, metadata={"help": "torch intra-op threads (0 = leave torch's)"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="probes"), metadata={"help": "MLflow; one run"}
    )
    output_dir: str = field(default="results/probes", metadata={"help": "Parquet dataset of probe trials + report/"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-vector cache; empty: <model cache>/vectors"})

    def __post_init__(self) -> None:
        from lab.protocol.words import select_concepts

        select_concepts(self.concepts)
        bad = [p for p in self.probes if p not in PROBES] + [k for k in self.kinds if k not in KINDS]
        if bad or not self.probes or not self.kinds:
            raise LabError(f"probes must be from {PROBES} and kinds from {KINDS} (got {bad[0] if bad else 'none'})")
        if not 2 <= self.n_sentences <= 9:
            raise LabError("n_sentences must be in 2..9 (one digit token per answer)")
        for s in self.strengths:
            check_strength(s)
        if any(not 0 <= f < 1 for f in self.weak_fractions) or not self.weak_fractions:
            raise LabError("weak_fractions must be in [0, 1)")
        if self.repeats < 1 or self.batch_size < 1:
            raise LabError("repeats and batch_size must be >= 1")


def settings(cfg: ProbesConfig) -> Any:
    """Concepts, layers, strengths and mode resolved against the model's registry defaults."""
    from lab.model.loading import spec_for
    from lab.protocol.trials import SweepConfig, resolve
    from lab.protocol.words import select_concepts

    spec = spec_for(cfg.model.name)
    sweep = SweepConfig(
        concepts=cfg.concepts, layers=cfg.layers, strengths=cfg.strengths, strength_mode=cfg.strength_mode
    )
    layers, strengths, mode = resolve(
        sweep,
        spec.default_layers if spec else (),
        spec.default_strengths if spec else (),
        spec.strength_mode if spec else "raw",
    )
    if spec is not None and any(not 0 <= x < spec.n_layers for x in layers):
        raise LabError(f"a layer in {list(layers)} is out of range for {spec.name} (0..{spec.n_layers - 1})")
    return ProbeSettings(
        select_concepts(cfg.concepts),
        layers,
        strengths,
        mode,
        cfg.probes,
        cfg.kinds,
        cfg.n_sentences,
        cfg.weak_fractions,
        cfg.repeats,
        cfg.seed,
    )
