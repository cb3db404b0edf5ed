"""Trained bias vector ("introspection is under-elicited"): the pure parts — the stored concept split, the injection
band scaled to a model's depth, the training examples and their target answers, the answer-only loss, and the
held-out evaluation's guards (identification against chance, whether a gain is concept-specific).

Protocol (PROTOCOL.md, "Trained bias vector"): 400 training / 100 held-out concepts (seeded, stored), 10 trials per
concept with controls mixed in at p = 0.5; inject at a random layer of a band (odd layers 29–55 of Gemma's 62) and a
random strength in {2, 3, 4, 5}; cross-entropy on the target answer only. The guard exists because a bias can teach
a model to report *any* perturbation: then random same-norm vectors are "detected" as often as concepts, and the
answer names a concept no more often than chance. Rerun the analysis from stored generations:
`python -m analysis.steering_vector --run <job output_dir>`.
"""
from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from lab.errors import LabError

TARGET_YES = 'Yes, I detect an injected thought. The injected word is "{concept}".'
TARGET_NO = "No, I don't detect any injected thought in this trial."
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


def make_split(words: Sequence[str], seed: int, n_heldout: int = 100, n_val: int = 40,
               words_version: str = "") -> ConceptSplit:
    """A seeded permutation: the first `n_heldout` words are held out, the next `n_val` validate, the rest train."""
    if n_heldout + n_val >= len(words):
        raise LabError(f"split of {len(words)} words: n_heldout + n_val must leave training concepts")
    perm = list(words)
    random.Random(seed).shuffle(perm)
    return ConceptSplit(seed, tuple(perm[n_heldout + n_val:]), tuple(perm[n_heldout:n_heldout + n_val]),
                        tuple(perm[:n_heldout]), words_version).check(words)


def split_path(seed: int) -> Path:
    return Path(str(resources.files("analysis").joinpath(f"data/steering_split_seed{seed}.json")))


def stored_split(seed: int = 0) -> ConceptSplit:
    """The versioned split shipped in analysis/data (made by `make_split` over lab's 500 concepts)."""
    from lab.concepts import word_list

    p = split_path(seed)
    if not p.is_file():
        raise LabError(f"no stored concept split for seed {seed} ({p}); write one with analysis.steering_vector "
                       "--write-split SEED")
    wl = word_list("concepts")
    split = ConceptSplit.from_dict(json.loads(p.read_text()))
    if split.words_version != wl.version:
        raise LabError(f"stored split {p.name} was made from concepts list {split.words_version}, now {wl.version}")
    return split.check(wl.words)


# --------------------------------------------------------------------------------------------------- the band
def scaled_band(n_layers: int, band: Sequence[int] = PAPER_BAND, ref_layers: int = PAPER_N_LAYERS,
                step: int = 2) -> tuple[int, ...]:
    """The paper's injection band at the same relative depth of an `n_layers` model, every `step`-th layer
    (62 layers → 29, 31, …, 55; 30 layers → 14, 16, …, 26)."""
    lo, hi = round(band[0] * n_layers / ref_layers), round(band[1] * n_layers / ref_layers)
    return tuple(range(lo, min(hi, n_layers - 1) + 1, step))


def relative_strengths(strengths: Sequence[float] = PAPER_STRENGTHS, main: float = 4.0,
                       main_relative: float = 0.2) -> tuple[float, ...]:
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

    @property
    def target(self) -> str:
        return TARGET_YES.format(concept=self.concept) if self.injected else TARGET_NO


def plan_examples(concepts: Sequence[str], trials_per_concept: int, band: Sequence[int],
                  strengths: Sequence[float], control_p: float, seed: int) -> list[Example]:
    """`trials_per_concept` examples per concept (trial numbers 1..N), each a control with p = `control_p`, with a
    random layer of `band` and strength; shuffled. Deterministic in `seed`."""
    if not band or not strengths:
        raise LabError("bias training needs a non-empty injection band and strengths")
    rng = random.Random(seed)
    out = [Example(c, n, rng.random() >= control_p, rng.choice(list(band)), rng.choice(list(strengths)))
           for c in concepts for n in range(1, trials_per_concept + 1)]
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
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), nxt.reshape(-1),
                                             ignore_index=IGNORE)


# --------------------------------------------------------------------------------------------------- guards
def mentions(text: str, word: str) -> bool:
    """Whole-word, case-insensitive (plural s/es allowed)."""
    return re.search(rf"\b{re.escape(word.lower())}(?:s|es)?\b", str(text).lower()) is not None


def identification_vs_chance(df: Any, concepts: Sequence[str]) -> dict[str, float]:
    """From stored responses: how often an injected trial's answer names its own concept (`own_id`), another of
    `concepts` (`other_id`), and the chance level of naming one specific concept — the mean fraction of the other
    concepts named (`chance_id`); plus how often a random-vector trial names its paired concept (`random_id`)."""
    from lab.metrics import wilson

    out: dict[str, float] = {}
    inj = df[(df.kind == "injection") & ~df.forced.astype(bool)]
    rnd = df[df.kind.isin(["random", "norm_matched"]) & ~df.forced.astype(bool)]
    names = list(dict.fromkeys(concepts))
    own = [mentions(r, c) for r, c in zip(inj.response, inj.concept)]
    others = [[w for w in names if w != c and mentions(r, w)] for r, c in zip(inj.response, inj.concept)]
    for key, hits, n in (("own_id", sum(own), len(own)), ("other_id", sum(bool(o) for o in others), len(others)),
                         ("random_id", sum(mentions(r, c) for r, c in zip(rnd.response, rnd.concept)), len(rnd))):
        p, lo, hi = wilson(int(hits), int(n))
        out |= {key: p, f"{key}_lo": lo, f"{key}_hi": hi, f"n_{key}": n}
    k = max(len(names) - 1, 1)
    out["chance_id"] = (sum(len(o) for o in others) / k / len(others)) if others else math.nan
    return out


def verdict(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the intervals support, as flags and one sentence each. Rates come from `lab.metrics.summarize` (with
    `identification_vs_chance` merged in); 'apart' means the 95 % intervals do not overlap."""
    def g(d: dict[str, float], k: str) -> float:
        v = d.get(k, math.nan)
        return math.nan if v is None else float(v)

    def above(a: dict[str, float], ka: str, b: dict[str, float], kb: str) -> bool:
        return g(a, f"{ka}_lo") > g(b, f"{kb}_hi")

    vec = [k for k in ("random_rate", "norm_matched_rate") if not math.isnan(g(after, k))]
    flags = {
        "tpr_gain": above(after, "tpr", before, "tpr"),
        "fpr_rise": above(after, "fpr", before, "fpr"),
        "concept_specific": bool(vec) and all(above(after, "tpr", after, k) for k in vec),
        "vector_rate_rise": any(above(after, k, before, k) for k in vec),
        "id_above_chance": g(after, "own_id_lo") > max(g(after, "chance_id"), g(after, "random_id_hi")),
    }
    flags["perturbation_detector"] = flags["vector_rate_rise"] and not flags["concept_specific"]
    lines = [
        f"TPR {_ci(before, 'tpr')} → {_ci(after, 'tpr')}: " + ("a gain (intervals apart)" if flags["tpr_gain"]
                                                              else "no gain the intervals support"),
        f"FPR {_ci(before, 'fpr')} → {_ci(after, 'fpr')}" + (": RISES (intervals apart)" if flags["fpr_rise"] else ""),
    ]
    for k in vec:
        lines.append(f"{k} {_ci(before, k)} → {_ci(after, k)}")
    if flags["perturbation_detector"]:
        lines.append("PERTURBATION DETECTOR: random same-norm vectors are 'detected' more after training and not "
                     "less than concepts — the bias reports any perturbation, not the concept")
    elif flags["concept_specific"]:
        lines.append("concept-specific: held-out TPR lies above every random-vector rate (intervals apart)")
    else:
        lines.append("not shown concept-specific: held-out TPR is not above the random-vector rate (intervals overlap)")
    lines.append(f"identification: own concept {_ci(after, 'own_id')} vs another held-out concept "
                 f"{_ci(after, 'other_id')}, chance per concept {g(after, 'chance_id'):.3f}, paired concept on "
                 f"random vectors {_ci(after, 'random_id')} → "
                 + ("above chance" if flags["id_above_chance"] else "NOT above chance"))
    return flags | {"lines": lines}


def _ci(d: dict[str, float], k: str) -> str:
    v = d.get(k, math.nan)
    if v is None or v != v:
        return "n/a"
    return f"{v:.2f} [{d[k + '_lo']:.2f},{d[k + '_hi']:.2f}]"


def arm_rates(df: Any, heldout: Sequence[str]) -> dict[str, float]:
    """`lab.metrics.summarize` + `identification_vs_chance` for one arm's stored trials."""
    from lab.metrics import summarize

    return summarize(df) | identification_vs_chance(df, heldout)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="re-analyse a steering-vector run from its stored generations")
    ap.add_argument("--run", help="the job's output_dir (holds arms/<arm>/eval/trials)")
    ap.add_argument("--write-split", type=int, metavar="SEED", help="write analysis/data/steering_split_seedSEED.json")
    args = ap.parse_args(argv)
    if args.write_split is not None:
        from lab.concepts import word_list

        wl = word_list("concepts")
        p = split_path(args.write_split)
        p.write_text(json.dumps(make_split(wl.words, args.write_split, words_version=wl.version).to_dict(), indent=1))
        print(f"wrote {p}")
        return 0
    from lab import store

    root = Path(args.run)
    meta = json.loads((root / "split.json").read_text())
    heldout = meta["heldout"]
    arms = sorted(p.name for p in (root / "arms").iterdir() if (p / "eval" / "trials").is_dir())
    rates = {a: arm_rates(store.read(root / "arms" / a / "eval" / "trials"), heldout) for a in arms}
    base = rates.get("baseline", {})
    for a in arms:
        print(f"== {a}")
        for line in verdict(base, rates[a])["lines"]:
            print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
