"""Activation patching of attention / MLP outputs after the injection layer (the paper's knock-out / knock-in).

For a batch of injection trials (concept c, trial number n, injection layer Li, raw strength s):
- `clean`: the trial prompt, nothing injected; `steered`: s·v_c added at `resid_post.Li` from the injection start on.
- `knock_out` at (L, component): the steered run with `component.L` replaced by the clean run's output, over the whole
  sequence; `knock_in`: the clean run with `component.L` replaced by the steered run's output.
- `forced_knock_out`: the same knock-out with the forced prefill appended ("Yes, I do detect an injected thought
  about"), read as the log-prob of the concept's first token (`forced_steered` / `forced_clean` are its references).
Main metric: Yes−No logsumexp at the answer position (`lab.steer.readouts.yes_no_score`). Patches are
`lab.steer.interventions.Patch` with values captured from the reference run of the same rows and padding, so patching a run
with its own activations changes nothing, bit for bit.

Runs through `lab.run.experiment.execute`: `plan` (no model loaded) gives one trial per row × patched layer ×
component; `prepare` (first replica) computes the concept vectors and tokenises the batches; `work` runs a shard of
whole cells of one batch, and a replica keeps a batch's reference runs across its shards (`PatchWorker`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Literal

import torch

from lab.config import ModelConfig
from lab.errors import LabError
from lab.run.parallel import FanOutConfig
from lab.run.tracking import TrackingConfig
from lab.steer import interventions as iv
from lab.steer.concepts import DEFAULT_TEMPLATE
from lab.steer.injection import Injection, Strength
from lab.steer.readouts import NO_VARIANTS, YES_VARIANTS, concept_first_token, pad_left, variant_token_ids

COMPONENTS = ("attn_out", "mlp_out")
MODES = ("knock_out", "knock_in", "forced_knock_out")
FORCED_PREFILL = "Yes, I do detect an injected thought about"
PATCH_VERSION = 1


@dataclass(frozen=True)
class PatchingConfig:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model to inject into and patch"})
    concepts: str | tuple[str, ...] = field(default="first:6", metadata={"help": "as sweep.concepts"})
    trial_numbers: tuple[int, ...] = field(default=(1,), metadata={"help": "n in 'Trial {n}', per concept"})
    layer: int = field(default=12, metadata={"help": "injection layer"})
    strength: float = field(default=0.2, metadata={"help": "injection strength, > 0, in strength_mode units"})
    strength_mode: Literal["raw", "relative"] = field(default="relative", metadata={"help": "as sweep.strength_mode"})
    patch_layers: tuple[int, ...] = field(default=(), metadata={"help": "empty = every layer after `layer`"})
    layer_stride: int = field(default=1, metadata={"help": "empty patch_layers: every stride-th layer after `layer`"})
    components: tuple[str, ...] = field(default=("attn_out", "mlp_out"), metadata={"help": "attn_out and/or mlp_out"})
    runner: FanOutConfig = field(default_factory=FanOutConfig, metadata={"help": "actors; batch_size: trials/batch"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "concept-vector prompt"})
    baseline: str = field(default="baseline_words", metadata={"help": "word list whose mean concept vectors subtract"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="patching"), metadata={"help": "MLflow; one run"}
    )
    output_dir: str = field(default="results/patching", metadata={"help": "patching/ (Parquet shards) + report/"})
    cache_dir: str | None = field(default=None, metadata={"help": "concept-vector cache; empty: <model cache>/vectors"})

    def __post_init__(self) -> None:
        from lab.protocol.words import select_concepts

        select_concepts(self.concepts)
        if any(c not in COMPONENTS for c in self.components) or not self.components:
            raise LabError(f"components must be from {COMPONENTS}")
        bad = self.layer_stride < 1 or not self.trial_numbers or self.strength <= 0
        if bad or min(self.patch_layers, default=99) <= self.layer:
            raise LabError("layer_stride >= 1, trial_numbers non-empty, strength > 0, patch_layers after `layer`")


@dataclass(frozen=True)
class PatchTrial:
    """One stored row: row `row` of batch `batch` patched at (`patch_layer`, `component`); `shard`: whole cells of
    one batch that run together."""

    trial_id: str
    batch: int
    row: int
    patch_layer: int
    component: str
    shard: tuple[int, int]


@dataclass(frozen=True)
class PatchPlan:
    trials: list[PatchTrial]
    layers: list[int]  # patched layers
    batches: list[list[tuple[str, int]]]  # (concept, trial number) of each row


def n_layers(model: ModelConfig) -> int:
    """The model's depth from its registry entry, else from its checkpoint's config (no weights loaded)."""
    from transformers import AutoConfig

    from lab.model.loading import spec_for

    if (spec := spec_for(model.name)) is not None:
        return spec.n_layers
    try:
        c = AutoConfig.from_pretrained(model.name)
    except OSError as e:
        raise LabError(f"unknown model '{model.name}' ({str(e).splitlines()[0]})") from None
    return getattr(c, "text_config", c).num_hidden_layers


def plan(cfg: PatchingConfig) -> PatchPlan:
    """The trials (trial ids as ever: the model, concept, trial number, layers, strength and component), batch by
    batch, cell by cell; the layers are checked against the model's depth without loading it."""
    from lab.experiments.concept_injection import model_key
    from lab.protocol.trials import trial_id
    from lab.protocol.words import select_concepts

    depth = n_layers(cfg.model)
    layers = list(cfg.patch_layers) or list(range(cfg.layer + 1, depth))[:: cfg.layer_stride]
    for layer in (cfg.layer, *layers):
        if not 0 <= layer < depth:
            raise LabError(f"layer {layer} is out of range for {cfg.model.name} (0..{depth - 1})")
    rows, bs = [(c, n) for c in select_concepts(cfg.concepts) for n in cfg.trial_numbers], cfg.runner.batch_size
    batches = [rows[i : i + bs] for i in range(0, len(rows), bs)]
    same = {"model": model_key(cfg.model), "layer": cfg.layer, "strength": cfg.strength, "version": PATCH_VERSION}
    cells = [(p, comp) for p in layers for comp in cfg.components]
    spread = -(-max(cfg.runner.num_actors, 1) // len(batches))  # shards per batch, so that every replica has work
    trials = []
    for bi, part in enumerate(batches):
        per = max(1, min(cfg.runner.shard_size // len(part), -(-len(cells) // spread)))  # cells per shard
        for k, (p, comp) in enumerate(cells):
            for j, (c, n) in enumerate(part):
                tid = trial_id(
                    concept=c, trial_number=n, strength_mode=cfg.strength_mode, patch_layer=p, component=comp, **same
                )
                trials.append(PatchTrial(tid, bi, j, p, comp, (bi, k // per)))
    return PatchPlan(trials, layers, batches)


@dataclass(frozen=True)
class PatchBatch:
    """Rows that share one forward pass: token ids, injection starts, vectors [B, d] and raw strengths [B]."""

    key: str
    concepts: tuple[str, ...]
    trial_numbers: tuple[int, ...]
    rows: tuple[tuple[int, ...], ...]
    forced_rows: tuple[tuple[int, ...], ...]
    starts: tuple[int, ...]
    vectors: torch.Tensor
    strengths: tuple[float, ...]
    layer: int  # injection layer


def build_batch(
    lm: Any,
    key: str,
    concepts: list[str],
    trial_numbers: list[int],
    vectors: torch.Tensor,
    strengths: list[float],
    layer: int,
    variant: str = "original",
) -> PatchBatch:
    """Token rows of the trial prompt (and of the forced-prefill prompt) for each (concept, trial number)."""
    from lab.protocol.prompts import inject_start, render

    if len(concepts) != len(trial_numbers):
        raise ValueError("one trial number per concept row")
    rows, forced, starts = [], [], []
    for n in trial_numbers:
        p = render(lm, variant, "standard", n)
        ids, start = inject_start(lm.tokenizer, p)
        rows.append(tuple(ids))
        starts.append(start)
        forced.append(tuple(lm.tokenizer(p.text + FORCED_PREFILL, add_special_tokens=False)["input_ids"]))
    b = (tuple(concepts), tuple(trial_numbers), tuple(rows), tuple(forced), tuple(starts))
    return PatchBatch(key, *b, vectors, tuple(strengths), layer)


@dataclass(frozen=True)
class PatchContext:  # what every shard needs, built once by `prepare` on the first replica
    batches: list[PatchBatch]
    sites: list[str]  # captured in the reference runs: every patched (component, layer)
    fields: dict[str, Any]  # stored in every row


def prepare(lm: Any, cfg: PatchingConfig, layers: list[int], batches: list[list[tuple]], cache: Any) -> PatchContext:
    """Check the layers against the loaded model, compute the concept vectors (`cache`: their on-disk cache, or
    None) and tokenise every batch (`PatchPlan.batches`: (concept, trial number) rows)."""
    from lab.experiments.concept_injection import model_key
    from lab.steer.concepts import concept_vectors

    for layer in (cfg.layer, *layers):
        lm.check_layer(layer)
    concepts = list(dict.fromkeys(c for part in batches for c, _ in part))
    vecs, _ = concept_vectors(lm, concepts, [cfg.layer], cfg.template, cfg.baseline, cache, model_key(cfg.model))
    strength, out = Strength(cfg.strength, cfg.strength_mode), []
    tag = uuid.uuid4().hex[:8]  # this run's batch keys: references a replica cached for another run are never reused
    for i, part in enumerate(batches):
        cv = [vecs[(c, cfg.layer)] for c, _ in part]
        raw, vectors = [strength.raw(v.norm, v.resid_norm) for v in cv], torch.stack([v.vector for v in cv])
        out.append(build_batch(lm, f"{tag}/b{i}", *map(list, zip(*part)), vectors, raw, cfg.layer))
    sites = [f"{c}.{p}" for p in layers for c in cfg.components]
    fields = {"model": cfg.model.name, "strength": cfg.strength, "strength_mode": cfg.strength_mode}
    return PatchContext(out, sites, fields)


_REFS: dict[str, dict[str, Any]] = {}  # this replica's reference runs of its latest batch, kept across shards


def work(lm: Any, shard: list[PatchTrial], ctx: PatchContext) -> list[dict[str, Any]]:
    """The stored rows of a shard: each cell (batch, layer, component) run once for its whole batch."""
    w, out = PatchWorker(lm, _REFS), []
    for (bi, p, comp), cell in groupby(shard, key=lambda t: (t.batch, t.patch_layer, t.component)):
        b = ctx.batches[bi]
        out += cell_rows(b, {t.row: t.trial_id for t in cell}, p, comp, w.cell(b, p, comp, ctx.sites), **ctx.fields)
    return out


class PatchWorker:
    """Patched passes on one model, one (layer, component) at a time; the reference runs of the latest batch are kept
    (in `refs`, which may outlive the worker)."""

    def __init__(self, lm: Any, refs: dict[str, dict[str, Any]] | None = None):
        self.lm = lm
        self.yes = variant_token_ids(lm.tokenizer, YES_VARIANTS)
        self.no = variant_token_ids(lm.tokenizer, NO_VARIANTS)
        self._refs = {} if refs is None else refs

    @torch.no_grad()
    def _forward(
        self, rows: tuple[tuple[int, ...], ...], b: PatchBatch, steer: bool, patch: list[Any], capture: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ids, mask, pad = pad_left(rows, self.lm.tokenizer.pad_token_id)
        ops = list(patch)
        if steer:
            starts = torch.tensor(b.starts) + torch.tensor(pad)
            ops.insert(0, Injection(b.layer, b.vectors, torch.tensor(b.strengths), starts).op())
        dev = self.lm.device
        with iv.apply(self.lm.model, ops), iv.capture(self.lm.model, capture) as acts:
            out = self.lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].float().cpu(), {s: v[0] for s, v in acts.items()}

    def _metric(self, logits: torch.Tensor, b: PatchBatch, forced: bool) -> list[float]:
        from lab.steer.readouts import first_token_logprob, yes_no_score

        if forced:
            toks = [concept_first_token(self.lm.tokenizer, c) for c in b.concepts]
            return first_token_logprob(logits, toks).tolist()
        return yes_no_score(logits, self.yes, self.no).tolist()

    def references(self, b: PatchBatch, sites: list[str], forced: bool = True) -> dict[str, Any]:
        """Clean / steered (and forced) runs of a batch with the sites captured; computed once per batch."""
        if b.key not in self._refs:
            self._refs.clear()  # keep one batch: a replica walks the cells of one batch at a time
        ref = self._refs.setdefault(b.key, {})
        for f in (False, True) if forced else (False,):
            for steer in (False, True):
                name = ("forced_" if f else "") + ("steered" if steer else "clean")
                if name not in ref:
                    logits, acts = self._forward(b.forced_rows if f else b.rows, b, steer, [], sites)
                    ref[name] = (self._metric(logits, b, f), acts)
        return ref

    def cell(self, b: PatchBatch, layer: int, component: str, sites: list[str]) -> dict[str, list[float]]:
        """Metrics of every mode at (layer, component), plus the four references, one value per row."""
        ref = self.references(b, sites)
        site = f"{component}.{layer}"
        out = {k: v[0] for k, v in ref.items()}
        patched = lambda rows, steer, src: self._forward(rows, b, steer, [iv.Patch(site, ref[src][1][site])], [])[0]
        out["knock_out"] = self._metric(patched(b.rows, True, "clean"), b, False)
        out["knock_in"] = self._metric(patched(b.rows, False, "steered"), b, False)
        out["forced_knock_out"] = self._metric(patched(b.forced_rows, True, "forced_clean"), b, True)
        return out

    def self_patch(self, b: PatchBatch, site: str) -> dict[str, list[float]]:
        """The identity check: steered run patched with its own activations, clean run with its own."""
        ref = self.references(b, [site], forced=False)
        st = self._forward(b.rows, b, True, [iv.Patch(site, ref["steered"][1][site])], [])[0]
        cl = self._forward(b.rows, b, False, [iv.Patch(site, ref["clean"][1][site])], [])[0]
        st, cl = self._metric(st, b, False), self._metric(cl, b, False)
        return {"steered": ref["steered"][0], "steered_self": st, "clean": ref["clean"][0], "clean_self": cl}


def cell_rows(
    b: PatchBatch, ids: dict[int, str], patch_layer: int, component: str, metrics: dict[str, list[float]], **fields: Any
) -> list[dict[str, Any]]:
    """One stored row per trial {row of the batch: trial id}: the trial's fields and every metric of this cell."""
    return [
        {
            "trial_id": t,
            "concept": b.concepts[j],
            "trial_number": b.trial_numbers[j],
            "layer": b.layer,
            "strength_raw": b.strengths[j],
            "patch_layer": patch_layer,
            "component": component,
            **fields,
            **{k: v[j] for k, v in metrics.items()},
        }
        for j, t in ids.items()
    ]
