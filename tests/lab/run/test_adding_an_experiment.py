"""docs/architecture.md's "adding an experiment", as a test: a complete toy experiment written against the public API
(the lines between the markers, quoted by the doc), run in process and on Ray actors through the one `execute`."""

from __future__ import annotations

# --- experiment: begin ---
from dataclasses import dataclass, field

import torch

from lab.protocol.trials import trial_id
from lab.run import store
from lab.run.experiment import execute
from lab.steer.concepts import concept_vectors
from lab.steer.injection import Injection, Strength, inject


@dataclass(frozen=True)
class TopTokenTrial:  # what is planned: one forward pass each, with a deterministic id
    concept: str
    strength: float  # relative: ‖s·v‖/‖resid‖
    trial_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trial_id", trial_id(toy="top-token", concept=self.concept, strength=self.strength))


def plan(concepts: list[str], strengths: list[float]) -> list[TopTokenTrial]:
    return [TopTokenTrial(c, s) for c in concepts for s in strengths]


def prepare(lm, concepts: list[str], layer: int):  # once, on the first replica: the concept vectors
    return concept_vectors(lm, concepts, [layer])[0]


def work(lm, shard: list[TopTokenTrial], vectors) -> list[dict]:  # on a replica: edit, read, one row per trial
    ids = lm.tokenizer("The word I am thinking of is", return_tensors="pt").input_ids.to(lm.device)
    rows = []
    for t in shard:
        cv = next(v for (c, _), v in vectors.items() if c == t.concept)
        with torch.no_grad(), inject(lm.model, Injection.of(cv, Strength(t.strength, "relative"))):
            top = int(lm.model(input_ids=ids).logits[0, -1].argmax())
        rows.append(
            {"trial_id": t.trial_id, "concept": t.concept, "strength": t.strength, "top": lm.tokenizer.decode(top)}
        )
    return rows


def report(rows):  # pure, over stored rows: how often the injection changed the top token
    base = rows[rows.strength == 0].set_index("concept").top
    steered = rows[rows.strength > 0]
    return float((steered.top.values != base.loc[steered.concept].values).mean())


# --- experiment: end ---


def test_the_toy_experiment_runs_in_process_and_on_ray_actors(tmp_path):
    from lab.config import ModelConfig
    from lab.run.parallel import FanOutConfig

    trials = plan(["bread", "ocean", "silence"], [0.0, 0.5])
    args = dict(model=ModelConfig(), work=work, prepare=prepare, prepare_args=(["bread", "ocean", "silence"], 6))
    local = execute(trials, tmp_path / "local", runner=FanOutConfig(num_actors=0, shard_size=2), **args)
    on_ray = execute(
        trials, tmp_path / "ray", runner=FanOutConfig(num_actors=1, shard_size=2, cpus_per_actor=1), **args
    )
    assert (local.new, on_ray.new) == (6, 6)
    a, b = (store.read(tmp_path / d).sort_values("trial_id").reset_index(drop=True) for d in ("local", "ray"))
    assert a[["trial_id", "top"]].equals(b[["trial_id", "top"]])  # same rows wherever it ran
    assert a[a.strength == 0].top.nunique() == 1  # strength 0 is the same un-steered pass for every concept
    assert report(a) == report(b) == 2 / 3  # at half the residual norm, 'ocean' and 'silence' move the next token
    again = execute(trials, tmp_path / "local", runner=FanOutConfig(num_actors=0), **args)
    assert (again.new, again.skipped) == (0, 6)  # a rerun resumes: nothing is redone
