"""Train a zero-initialised bias vector on a frozen model so that it reports injected concepts (PROTOCOL.md,
"Trained bias vector"); the pure parts (split, band, targets, loss) are in training/bias/examples.py.

The bias is a learnable [d_model] vector added at `mlp_out.L` (the MLP down-projection output of block L), at every
layer (`all_layers`), or at `resid_post.L`; it is one `Bias` edit per site under `lab.steer.interventions.apply`, so its
hooks are removed in `finally` and a zero bias leaves logits bit-identical. During training each example's concept
vector (from the unmodified model) is added to `resid_post` of a random band layer from the token before "Trial n"
through the target answer; the loss is cross-entropy on the target tokens only. The `Bias` edit, the tokenised
examples and the loss of a batch are in training/bias/bias_loss.py; this module holds the config, the loop and storage.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lab.errors import LabError
from training.bias.bias_loss import Encoded, batch_loss, encode
from training.bias.examples import PAPER_STRENGTHS, ConceptSplit, plan_examples, scaled_band


@dataclass(frozen=True)
class BiasTrainConfig:
    """How the bias is trained (defaults: the paper's recipe)."""

    layers: tuple[int, ...] = field(default=(), metadata={"help": "bias layers (0-based); the job sweeps these"})
    all_layers: bool = field(default=False, metadata={"help": "one bias at every layer instead"})
    site: Literal["mlp_out", "resid_post"] = field(default="mlp_out", metadata={"help": "where the bias is added"})
    band: tuple[int, ...] = field(
        default=(),
        metadata={"help": "training injection layers; empty: the paper's odd 29–55 of 62 scaled to the model"},
    )
    strengths: tuple[float, ...] = field(default=PAPER_STRENGTHS, metadata={"help": "training injection strengths"})
    strength_mode: Literal["raw", "relative"] = field(
        default="raw", metadata={"help": "raw: s multiplies v; relative: ‖s·v‖/‖resid‖ (mean resid norm at the layer)"}
    )
    trials_per_concept: int = field(default=10, metadata={"help": "examples per concept (trial numbers 1..N)"})
    control_p: float = field(default=0.5, metadata={"help": "probability that an example is a no-injection control"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=8, metadata={"help": "examples per optimizer step (and per validation forward)"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training examples (fractions allowed)"})
    max_steps: int = field(default=0, metadata={"help": "cap on optimizer steps; 0 = epochs decide"})
    max_train_concepts: int = field(default=0, metadata={"help": "use only the first N training concepts; 0 = all"})
    val_examples: int = field(default=64, metadata={"help": "validation examples (validation concepts); 0 = none"})
    val_every: int = field(default=50, metadata={"help": "steps between validation losses"})
    patience: int = field(default=3, metadata={"help": "validations without improvement before stopping"})
    protocol: Literal["lab", "paper"] = field(
        default="lab",
        metadata={
            "help": "lab: train on split.train, validate on split.val with early stopping; paper: 14's recipe — train "
            "on split.train + split.val (400 concepts), no validation, a control added after an injection with "
            "p = control_p (14:826-864); set epochs: 1 for the paper's single epoch"
        },
    )
    target: Literal["paper", "lab"] = field(
        default="paper",
        metadata={"help": 'target answer: paper = ... is **"concept"** lower-cased (14:803, 848); lab = "Concept"'},
    )
    seed: int = field(default=0, metadata={"help": "example plan, data order (jobs.steering_vector: from seeds)"})
    split_seed: int = field(default=0, metadata={"help": "stored split analysis/data/steering_split_seed<N>.json"})

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.trials_per_concept < 1 or self.val_every < 1 or self.patience < 1:
            raise LabError("bias: batch_size, trials_per_concept, val_every and patience must be >= 1")
        if not 0 <= self.control_p < 1 or not self.lr > 0 or self.epochs <= 0:
            raise LabError("bias: control_p must be in [0, 1), lr and epochs > 0")


@dataclass(frozen=True)
class BiasCheckpoint:
    """Where `fit_bias` saves its whole state every `every` steps (and at the end), and resumes from if the file is
    there: a killed arm loses at most `every` steps. The caller makes sure the file was written by the same settings."""

    path: Path
    every: int


@dataclass
class BiasResult:
    bias: dict[str, torch.Tensor]
    train_losses: list[float]
    val_losses: list[tuple[int, float]]  # (steps done, loss); step 0 = the zero bias
    steps: int
    best_step: int
    stopped_early: bool


def fit_bias(
    model: Any,
    d_model: int,
    sites: Sequence[str],
    train: Sequence[Encoded],
    val: Sequence[Encoded],
    cfg: BiasTrainConfig,
    pad_id: int,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: BiasCheckpoint | None = None,
) -> BiasResult:
    """AdamW on zero-initialised biases at `sites`, model frozen (its requires_grad flags restored afterwards);
    validation loss every `val_every` steps, early stopping after `patience` validations without improvement, the
    best bias kept. With `checkpoint`, resumable: biases, optimizer, data order, RNGs, losses and the best so far."""
    torch.manual_seed(cfg.seed)
    params = {s: torch.nn.Parameter(torch.zeros(d_model, device=next(model.parameters()).device)) for s in sites}
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = math.ceil(cfg.epochs * math.ceil(len(train) / cfg.batch_size))
    total = min(total, cfg.max_steps) if cfg.max_steps else total
    flags = [p.requires_grad for p in model.parameters()]
    rng = random.Random(cfg.seed)
    order: list[int] = []
    losses: list[float] = []
    vals: list[tuple[int, float]] = []
    best = (math.inf, 0, {s: p.detach().clone() for s, p in params.items()})
    bad, stopped, start = 0, False, 1
    saved = torch.load(checkpoint.path, weights_only=True) if checkpoint and checkpoint.path.is_file() else None
    if saved is not None:  # resume where the killed run last saved
        with torch.no_grad():
            for s, p in params.items():
                p.copy_(saved["params"][s])
        opt.load_state_dict(saved["opt"])
        rng.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in saved["rng"]))
        torch.set_rng_state(saved["torch_rng"])
        order, losses, vals, bad, start = (
            saved["order"],
            saved["losses"],
            saved["vals"],
            saved["bad"],
            saved["step"] + 1,
        )
        best = (saved["best_loss"], saved["best_step"], saved["best"])

    def validate(step: int) -> None:
        nonlocal best, bad, stopped
        with torch.no_grad():
            v = sum(
                float(batch_loss(model, val[i : i + cfg.batch_size], params, pad_id)) * len(val[i : i + cfg.batch_size])
                for i in range(0, len(val), cfg.batch_size)
            ) / len(val)
        vals.append((step, v))
        if on_step:
            on_step(step, {"val_loss": v})
        if v < best[0]:
            best, bad = (v, step, {s: p.detach().clone() for s, p in params.items()}), 0
        else:
            bad += 1
            stopped = bad >= cfg.patience

    try:
        for p in model.parameters():
            p.requires_grad_(False)
        if val and saved is None:
            validate(0)
        for step in range(start, total + 1):
            if not order:
                order = list(range(len(train)))
                rng.shuffle(order)
            idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
            loss = batch_loss(model, [train[i] for i in idx], params, pad_id)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if on_step:
                on_step(step, {"train_loss": losses[-1]})
            if val and (step % cfg.val_every == 0 or step == total):
                validate(step)
                if stopped:
                    break
            if checkpoint and (step % checkpoint.every == 0 or step == total):
                state = {
                    "step": step,
                    "params": {s: p.detach().cpu() for s, p in params.items()},
                    "opt": opt.state_dict(),
                }
                state |= {"rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "order": order, "losses": losses}
                state |= {"vals": vals, "bad": bad, "best_loss": best[0], "best_step": best[1], "best": best[2]}
                torch.save(state, checkpoint.path.with_suffix(".tmp"))
                checkpoint.path.with_suffix(".tmp").replace(checkpoint.path)  # atomic: never half a checkpoint
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    final = best[2] if val else {s: p.detach().clone() for s, p in params.items()}
    return BiasResult(
        {s: v.cpu() for s, v in final.items()}, losses, vals, len(losses), best[1] if val else len(losses), stopped
    )


def bias_sites(cfg: BiasTrainConfig, n_layers: int) -> list[str]:
    layers = range(n_layers) if cfg.all_layers else cfg.layers
    if not layers:
        raise LabError("bias: give layers or all_layers: true")
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise LabError(f"bias layer {bad[0]} is out of range (0..{n_layers - 1})")
    return [f"{cfg.site}.{x}" for x in layers]


def training_examples(
    split: ConceptSplit, cfg: BiasTrainConfig, band: Sequence[int]
) -> tuple[tuple[str, ...], list[Any], list[Any]]:
    """(training concepts, training examples, validation examples) of `cfg.protocol` (see BiasTrainConfig)."""
    paper = cfg.protocol == "paper"
    pool = split.train + split.val if paper else split.train  # the paper trains on all 400 non-held-out concepts
    concepts = pool[: cfg.max_train_concepts or None]
    kw = {"target": cfg.target, "controls": "added" if paper else "mixed"}
    train_ex = plan_examples(concepts, cfg.trials_per_concept, band, cfg.strengths, cfg.control_p, cfg.seed, **kw)
    if paper or not cfg.val_examples:
        return concepts, train_ex, []
    val_ex = plan_examples(split.val, cfg.trials_per_concept, band, cfg.strengths, cfg.control_p, cfg.seed + 1, **kw)
    return concepts, train_ex, val_ex[: cfg.val_examples]


def train_bias(
    lm: Any,
    split: ConceptSplit,
    cfg: BiasTrainConfig,
    cache_dir: str | None = None,
    model_key: str | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: BiasCheckpoint | None = None,
) -> BiasResult:
    """Concept vectors of the training and validation concepts from the unmodified model, then `fit_bias`."""
    from lab.steer.concepts import concept_vectors

    band = cfg.band or scaled_band(lm.n_layers)
    concepts, train_ex, val_ex = training_examples(split, cfg, band)
    need = list(dict.fromkeys([*concepts, *(e.concept for e in val_ex)]))
    vectors, _ = concept_vectors(lm, need, band, cache_dir=cache_dir, model_key=model_key)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    return fit_bias(
        lm.model,
        lm.spec.d_model,
        bias_sites(cfg, lm.n_layers),
        encode(lm, train_ex, vectors, cfg.strength_mode),
        encode(lm, val_ex, vectors, cfg.strength_mode),
        cfg,
        pad,
        on_step,
        checkpoint,
    )


def fingerprint(bias: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for site in sorted(bias):
        h.update(site.encode())
        h.update(bias[site].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def save_bias(out_dir: str | Path, res: BiasResult, meta: dict[str, Any]) -> Path:
    """bias.safetensors (one tensor per site) + bias.json (sites, model, split seed, steps, losses, …)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {s: v.contiguous() for s, v in res.bias.items()},
        str(out / "bias.safetensors"),
        metadata={"fingerprint": fingerprint(res.bias)},
    )
    info = dict(meta) | {
        "sites": list(res.bias),
        "fingerprint": fingerprint(res.bias),
        "steps": res.steps,
        "best_step": res.best_step,
        "stopped_early": res.stopped_early,
        "train_losses": res.train_losses,
        "val_losses": res.val_losses,
        "norms": {s: float(v.norm()) for s, v in res.bias.items()},
    }
    (out / "bias.json").write_text(json.dumps(info, indent=1))
    return out


def load_bias(out_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    out = Path(out_dir)
    return load_file(str(out / "bias.safetensors")), json.loads((out / "bias.json").read_text())
