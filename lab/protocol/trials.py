"""Trials: one generation each, with a deterministic id, expanded from a `SweepConfig`.

Every injected trial has a paired no-injection control (same concept/layer/strength/trial number/sample, strength
applied = 0), and optionally paired vector controls that inject something that is not the concept:
`random` (a random direction with the mean concept-vector norm at that layer), `norm_matched` (a random direction
with exactly this concept vector's norm), `shuffled` (this concept vector with its dimensions permuted) and
`negative` (−v: the concept vector with its sign flipped, same norm; the paper's gates respond to both signs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from lab.config import check_strength
from lab.errors import LabError
from lab.protocol.words import select_concepts
from lab.steer.concepts import DEFAULT_TEMPLATE

Kind = Literal["injection", "control", "random", "norm_matched", "shuffled", "negative"]
VECTOR_CONTROLS = ("random", "norm_matched", "shuffled", "negative")


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep: concepts × layers × strengths × trial numbers × samples (+ controls)."""

    concepts: str | tuple[str, ...] = field(
        default="first:10", metadata={"help": "'first:N', 'slice:A:B', 'all' (500 words) or a list of words"}
    )
    layers: tuple[int, ...] = field(default=(), metadata={"help": "0-based blocks; empty = the model's defaults"})
    strengths: tuple[float, ...] = field(default=(), metadata={"help": "empty = the model's defaults"})
    strength_mode: Literal["raw", "relative", "default"] = field(
        default="default",
        metadata={"help": "raw: the paper's multiplier of v; relative: ‖s·v‖/‖resid‖ (mean resid norm at the layer)"},
    )
    trials_per_concept: int = field(default=2, metadata={"help": "trial numbers n = 1..N in 'Trial {n}'"})
    samples: int = field(default=1, metadata={"help": "samples per trial number"})
    controls: tuple[str, ...] = field(default=("random",), metadata={"help": f"vector controls: {VECTOR_CONTROLS}"})
    forced_identification: bool = field(default=False, metadata={"help": "also run prefilled 'Yes, I detect' trials"})
    prompt_variant: str = field(default="original", metadata={"help": "lab/data/prompts.yaml variant, e.g. structured"})
    dialogue_format: str = field(default="standard", metadata={"help": "lab/data/prompts.yaml format, e.g. plain"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "concept-vector prompt"})
    baseline: str = field(default="baseline_words", metadata={"help": "concept vector = activation − this list's mean"})
    max_new_tokens: int = field(default=48, metadata={"help": "generated tokens per trial at most"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    seed: int = field(default=0, metadata={"help": "in trial ids; seeds sampling and the random control vectors"})
    selftest: bool = field(
        default=True,
        metadata={
            "help": "before generating: the judge grades canned answers and a probe injection must raise the concept's "
            "logit (lab.experiments.selftest)"
        },
    )

    def __post_init__(self) -> None:
        from lab.protocol.prompts import dialogue_format, variant

        select_concepts(self.concepts)
        variant(self.prompt_variant)
        dialogue_format(self.dialogue_format)
        for s in self.strengths:
            check_strength(s)
        bad = [c for c in self.controls if c not in VECTOR_CONTROLS]
        if bad:
            raise LabError(f"unknown control '{bad[0]}' (known: {', '.join(VECTOR_CONTROLS)})")
        if self.trials_per_concept < 1 or self.samples < 1:
            raise LabError("trials_per_concept and samples must be >= 1")
        if self.max_new_tokens < 1:
            raise LabError("max_new_tokens must be >= 1")
        if not 0 <= self.temperature <= 5:
            raise LabError(f"temperature must be in [0, 5], got {self.temperature}")
        if len(set(self.layers)) != len(self.layers) or len(set(self.strengths)) != len(self.strengths):
            raise LabError("layers and strengths must not repeat")


@dataclass(frozen=True)
class Trial:
    trial_id: str
    model: str
    concept: str
    layer: int
    strength: float
    strength_mode: str
    kind: Kind
    trial_number: int
    sample: int
    forced: bool
    prompt_variant: str
    dialogue_format: str
    seed: int
    max_new_tokens: int
    temperature: float
    vector: str = ""  # which bank vector is injected; "" = the concept's own (only hashed when set)

    @property
    def injects(self) -> bool:
        return self.kind != "control" and self.strength > 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def trial_id(**fields: object) -> str:
    """A stable id from the fields that determine a generation (same config → same ids → resumable)."""
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


_SCALARS = (str, int, float, bool, type(None))
_JSON: dict[tuple[type, object], str] = {}  # keyed by type too: True == 1 and 0.0 == -0.0, but their JSON differs


def _json(v: object) -> str:
    if type(v) not in _SCALARS:
        return json.dumps(v, sort_keys=True, default=str)
    key = (type(v), repr(v) if type(v) is float else v)
    text = _JSON.get(key)
    if text is None:
        if len(_JSON) > 100_000:
            _JSON.clear()
        text = _JSON[key] = json.dumps(v)
    return text


class IdTemplate:
    """`trial_id(**fixed, **values)` for many trials that share `fixed`: the shared fields' JSON is written once and
    each trial's own values are filled in (a paper preset plans 400k trials per model; the id was 2/3 of the time)."""

    def __init__(self, fixed: dict[str, object], varying: Sequence[str]):
        names = sorted([*fixed, *varying])
        self.varying = [k for k in names if k in varying]
        shared = {k: json.dumps(v, sort_keys=True, default=str).replace("%", "%%") for k, v in fixed.items()}
        self.fmt = "{" + ", ".join(f"{json.dumps(k).replace('%', '%%')}: {shared.get(k, '%s')}" for k in names) + "}"

    def __call__(self, **values: object) -> str:
        blob = self.fmt % tuple(_json(values[k]) for k in self.varying)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def make_trial(**fields: object) -> Trial:
    return Trial(trial_id=trial_id(**fields), **fields)  # type: ignore[arg-type]


def resolve(
    sweep: SweepConfig, spec_layers: tuple[int, ...], spec_strengths: tuple[float, ...], spec_mode: str
) -> tuple[tuple[int, ...], tuple[float, ...], str]:
    """Fill empty layers/strengths/mode with the model's registry defaults."""
    layers = sweep.layers or spec_layers
    strengths = sweep.strengths or spec_strengths
    mode = spec_mode if sweep.strength_mode == "default" else sweep.strength_mode
    if not layers or not strengths:
        raise LabError("sweep.layers and sweep.strengths are empty and the model has no defaults")
    return tuple(layers), tuple(strengths), mode


GENERATION_FIELDS = ("prompt_variant", "dialogue_format", "seed", "max_new_tokens", "temperature")


def _generation_fields(sweep: SweepConfig, model: str, mode: str) -> dict[str, object]:
    """The sweep settings every trial carries (and hashes into its id), with the model and the strength mode."""
    return {"model": model, "strength_mode": mode} | {k: getattr(sweep, k) for k in GENERATION_FIELDS}


def vector_trials(
    sweep: SweepConfig,
    model: str,
    vectors: Sequence[tuple[str, str, float]],
    layer: int,
    mode: str,
    trial_numbers: int,
    samples: int = 1,
) -> list[Trial]:
    """Injection trials of named bank vectors — (vector key, concept it is judged for, strength) — for experiments
    that inject something other than a concept's own vector (projections, residuals, differences)."""
    common = _generation_fields(sweep, model, mode) | {"kind": "injection", "forced": False, "layer": layer}
    return [
        make_trial(**common, concept=c, strength=s, trial_number=n, sample=k, vector=v)
        for v, c, s in vectors
        for n in range(1, trial_numbers + 1)
        for k in range(samples)
    ]


def expand(
    sweep: SweepConfig, model: str, layers: tuple[int, ...], strengths: tuple[float, ...], mode: str
) -> list[Trial]:
    """All trials of a sweep in a fixed order: per setting, the injection then its paired controls."""
    out: list[Trial] = []
    common = _generation_fields(sweep, model, mode)
    id_of = IdTemplate(common, ("concept", "layer", "strength", "trial_number", "sample", "kind", "forced"))
    kinds = [("injection", False), ("control", False), *((c, False) for c in sweep.controls)]
    kinds += [("injection", True)] if sweep.forced_identification else []
    for concept in select_concepts(sweep.concepts):
        for layer in layers:
            for strength in strengths:
                for n in range(1, sweep.trials_per_concept + 1):
                    for s in range(sweep.samples):
                        cell = {
                            "concept": concept,
                            "layer": layer,
                            "strength": strength,
                            "trial_number": n,
                            "sample": s,
                        }
                        for kind, forced in kinds:
                            tid = id_of(kind=kind, forced=forced, **cell)
                            out.append(Trial(tid, kind=kind, forced=forced, **common, **cell))  # type: ignore[arg-type]
    ids = [t.trial_id for t in out]
    assert len(ids) == len(set(ids)), "trial ids collide"
    return out
