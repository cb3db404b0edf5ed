"""Trained bias vector ("introspection is under-elicited"): the pure parts — the stored concept split, the injection
band scaled to a model's depth, the training examples and their target answers, and the answer-only loss (the
held-out evaluation's guards are in analysis/bias_guards.py).

Protocol (PROTOCOL.md, "Trained bias vector"): 400 training / 100 held-out concepts (seeded, stored), 10 trials per
concept with controls mixed in at p = 0.5; inject at a random layer of a band (odd layers 29–55 of Gemma's 62) and a
random strength in {2, 3, 4, 5}; cross-entropy on the target answer only. The guard exists because a bias can teach
a model to report *any* perturbation: then random same-norm vectors are "detected" as often as concepts, and the
answer names a concept no more often than chance (analysis/bias_guards.py checks both). Write the stored split:
`python -m training.bias.examples --write-split SEED`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from lab.errors import LabError

# 14 = experiments/14_trained_bias_vector.py (safety-research/introspection-mechanisms 5d5d9b4)
TARGET_YES = (
    'Yes, I detect an injected thought. The injected word is **"{concept}"**.'  # 14:803, concept lower-cased (14:848)
)
TARGET_YES_LAB = 'Yes, I detect an injected thought. The injected word is "{concept}".'  # the lab's earlier target
TARGET_NO = "No, I don't detect any injected thought in this trial."  # 14:804
PAPER_BAND = (29, 55)  # odd layers of Gemma3-27B's 62 (the paper's code)
PAPER_N_LAYERS = 62
PAPER_STRENGTHS = (2.0, 3.0, 4.0, 5.0)
IGNORE = -100


# --------------------------------------------------------------------------------------------------- the split
@dataclass(frozen=True)
class ConceptSplit:
    """Training (`train`, with `val` for early stopping, both on the training side) vs `heldout` concepts."""

    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    heldout: tuple[str, ...]
    words_version: str = ""

    def check(self, words: Sequence[str] | None = None) -> ConceptSplit:
        """Disjoint (case-insensitive), no repeats, and (given `words`) covering exactly that list."""
        parts = {"train": self.train, "val": self.val, "heldout": self.heldout}
        seen: dict[str, str] = {}
        for name, ws in parts.items():
            for w in ws:
                if w.lower() in seen:
                    raise LabError(f"concept split: '{w}' is in both {seen[w.lower()]} and {name}")
                seen[w.lower()] = name
        if words is not None and set(seen) != {w.lower() for w in words}:
            raise LabError(f"concept split covers {len(seen)} words, the list has {len(words)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConceptSplit:
        return cls(int(d["seed"]), tuple(d["train"]), tuple(d["val"]), tuple(d["heldout"]), d.get("words_version", ""))


def make_split(
    words: Sequence[str], seed: int, n_heldout: int = 100, n_val: int = 40, words_version: str = ""
) -> ConceptSplit:
    """A seeded permutation: the first `n_heldout` words are held out, the next `n_val` validate, the rest train."""
    if n_heldout + n_val >= len(words):
        raise LabError(f"split of {len(words)} words: n_heldout + n_val must leave training concepts")
    perm = list(words)
    random.Random(seed).shuffle(perm)
    return ConceptSplit(
        seed,
        tuple(perm[n_heldout + n_val :]),
        tuple(perm[n_heldout : n_heldout + n_val]),
        tuple(perm[:n_heldout]),
        words_version,
    ).check(words)


def split_path(seed: int) -> Path:
    return Path(str(resources.files("training.bias").joinpath(f"data/steering_split_seed{seed}.json")))


def stored_split(seed: int = 0) -> ConceptSplit:
    """The versioned split shipped in training/bias/data (made by `make_split` over lab's 500 concepts)."""
    from lab.protocol.words import word_list

    p = split_path(seed)
    if not p.is_file():
        raise LabError(
            f"no stored concept split for seed {seed} ({p}); write one with training.bias.examples --write-split SEED"
        )
    wl = word_list("concepts")
    split = ConceptSplit.from_dict(json.loads(p.read_text()))
    if split.words_version != wl.version:
        raise LabError(f"stored split {p.name} was made from concepts list {split.words_version}, now {wl.version}")
    return split.check(wl.words)


# --------------------------------------------------------------------------------------------------- the band
def scaled_band(
    n_layers: int, band: Sequence[int] = PAPER_BAND, ref_layers: int = PAPER_N_LAYERS, step: int = 2
) -> tuple[int, ...]:
    """The paper's injection band at the same relative depth of an `n_layers` model, every `step`-th layer
    (62 layers → 29, 31, …, 55; 30 layers → 14, 16, …, 26)."""
    lo, hi = round(band[0] * n_layers / ref_layers), round(band[1] * n_layers / ref_layers)
    return tuple(range(lo, min(hi, n_layers - 1) + 1, step))


def relative_strengths(
    strengths: Sequence[float] = PAPER_STRENGTHS, main: float = 4.0, main_relative: float = 0.2
) -> tuple[float, ...]:
    """Raw paper strengths mapped to relative ones (‖s·v‖/‖resid‖) by pinning the paper's main strength to a model's
    main relative strength (the embedded model's 0.2 → 0.1, 0.15, 0.2, 0.25)."""
    return tuple(round(s * main_relative / main, 6) for s in strengths)


# --------------------------------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Example:
    concept: str
    trial_number: int
    injected: bool
    layer: int  # injection layer (drawn for controls too, unused there)
    strength: float
    target_style: str = "paper"  # paper: **"concept"** lower-cased (14:803, 848); lab: "Concept" as written

    @property
    def target(self) -> str:
        if not self.injected:
            return TARGET_NO
        if self.target_style == "lab":
            return TARGET_YES_LAB.format(concept=self.concept)
        return TARGET_YES.format(concept=self.concept.lower())


def plan_examples(
    concepts: Sequence[str],
    trials_per_concept: int,
    band: Sequence[int],
    strengths: Sequence[float],
    control_p: float,
    seed: int,
    target: str = "paper",
    controls: str = "mixed",
) -> list[Example]:
    """`trials_per_concept` examples per concept (trial numbers 1..N) with a random layer of `band` and strength;
    shuffled, deterministic in `seed`. `controls="mixed"` (the lab): each example is a control with p = `control_p`;
    `"added"` (the paper, 14:826-864): every trial is an injection, and a control of the same trial number is added
    after it with p = `control_p`. `target`: the target text's style (`Example.target_style`)."""
    if not band or not strengths:
        raise LabError("bias training needs a non-empty injection band and strengths")
    if target not in ("paper", "lab") or controls not in ("mixed", "added"):
        raise LabError(f"bias examples: target must be paper|lab and controls mixed|added, got {target}, {controls}")
    rng = random.Random(seed)
    out = []
    for c in concepts:
        for n in range(1, trials_per_concept + 1):
            if controls == "mixed":
                injected = rng.random() >= control_p
                out.append(Example(c, n, injected, rng.choice(list(band)), rng.choice(list(strengths)), target))
                continue
            out.append(Example(c, n, True, rng.choice(list(band)), rng.choice(list(strengths)), target))
            if rng.random() < control_p:
                out.append(Example(c, n, False, out[-1].layer, 0.0, target))
    rng.shuffle(out)
    return out


def answer_row(prompt_ids: Sequence[int], target_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """Token ids of prompt + target, and labels that score only the target tokens."""
    return list(prompt_ids) + list(target_ids), [IGNORE] * len(prompt_ids) + list(target_ids)


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded input_ids, attention_mask and labels (positions stay 0-based per row, so injection starts need
    no shift)."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r, _ in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in rows])
    return ids, mask, labels


def scored_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions whose logits predict a scored token (the position before each label), over the batch."""
    return torch.nonzero((labels[:, 1:] != IGNORE).any(0)).flatten()


def answer_loss(logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over target tokens. `logits` [B, T, V] for every position, or [B, K, V] for `positions`
    (the output of `scored_positions`)."""
    if positions is None:
        positions = torch.arange(labels.shape[1] - 1)
        logits = logits[:, :-1]
    nxt = labels[:, positions + 1]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), nxt.reshape(-1), ignore_index=IGNORE
    )


def main(seed: int) -> Path:
    """Write analysis/data/steering_split_seed<seed>.json from the concept list."""
    from lab.protocol.words import word_list

    wl = word_list("concepts")
    p = split_path(seed)
    p.write_text(json.dumps(make_split(wl.words, seed, words_version=wl.version).to_dict(), indent=1))
    print(f"wrote {p}")
    return p


if __name__ == "__main__":
    from lab.errors import ArgumentParser, one_line_errors

    ap = ArgumentParser(prog="python -m training.bias.examples", description="write the stored concept split of a seed")
    ap.add_argument(
        "--write-split",
        type=int,
        metavar="SEED",
        required=True,
        help="write analysis/data/steering_split_seedSEED.json",
    )
    with one_line_errors():
        main(ap.parse_args().write_split)
