"""Abliteration: remove the refusal direction r̂ from what every component writes to the residual stream.

Two ways that give the same logits (tests/analysis/test_abliteration.py, ≤ 1e-4 in float32):
  (a) `ablation_edits`: `Ablate` interventions h − w·(h·r̂)r̂ on the embedding output and on every `attn_out.L` and
      `mlp_out.L` (optional per-layer weights w_L; the paper's code uses tuned weights per layer region). Block
      outputs alone are not enough: the residual is a sum of writers, so each writer must be edited.
  (b) `orthogonalize`: the same projection folded into the weights that write to the residual stream — the token
      embedding E ← E − w·(E r̂)r̂ᵀ, every attention out-projection and MLP down-projection W ← W − w·r̂(r̂ᵀW) (and
      their biases b ← b − w·(r̂·b)r̂). A tied `lm_head` is untied first (it reads the residual, it is not a writer),
      and the model is saved with `tie_word_embeddings=False`, so `lab.model.loading.load(<dir>)` loads it like any
      checkpoint.
`directions` is one vector [d] for every layer, or one per layer [n_layers, d] (row L edits block L's writers; the
embedding uses row 0). Mixture-of-experts blocks (Qwen3-MoE) are orthogonalised expert by expert (each expert's
down-projection, fused [experts, d, d_ff] or one Linear per expert, and a shared expert where there is one): the
block's output is a weighted sum of expert outputs, so it stays orthogonal to r̂ and (b) equals (a) there too.
Architectures that normalise a sublayer's output before adding it (Gemma 2/3, OLMo 2/3: post-attention and
post-feedforward norms) are refused by (b) in one line: a norm after o_proj/down_proj rescales per dimension and per
token, so no weight edit of the projection equals removing r̂ from what reaches the residual. There (a) is exact —
`attn_out.L`/`mlp_out.L` are the post-norm outputs (lab/model/sites.py) — so use `method: interventions`
(`sites: writers` or `resid`, the paper's code).

Also here: a refusal-phrase matcher for short greedy replies (a simple check, stated as such in reports), and the
model-side steps of jobs.abliteration (`prepare_arms`, or `check_original` then `abliterate`) and jobs.geometry
(`vectors_and_direction`), each one call on a model replica (`lab.run.experiment.on_replica`) that returns results
only (tensors, strings, paths), so the driver loads no model when the runner has Ray actors.

Instructions: the shipped lists, or (`refusal.prompts_from`) the paper's own lists read from a local copy of its
`experiments/refusal_prompts.py` (or AdvBench's CSV / an Alpaca JSON) and sampled as its code does (`paper_sample`).
One piece (over 500 lines): the instructions, the directions they give and both ways to remove those directions are
one experiment's model side, and each part is used only through the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch

from lab.errors import LabError
from lab.model.loading import decoder_layers
from lab.steer.interventions import Ablate

HELDOUT = 32
SITE = "resid_post"


def _lines(text: str) -> list[str]:
    return [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]


def instructions(kind: str, extra: str | os.PathLike | None = None) -> list[str]:
    """The shipped `harmful` or `harmless` list (or a local file path as `kind`), plus the lines of `extra`."""
    if kind in ("harmful", "harmless"):
        items = _lines(resources.files("lab").joinpath(f"data/refusal_{kind}.txt").read_text())
    elif Path(kind).is_file():
        items = _lines(Path(kind).read_text())
    else:
        raise LabError(f"unknown instruction list '{kind}' (harmful, harmless or a file path)")
    if extra:
        if not Path(extra).is_file():
            raise LabError(f"instruction file not found: {extra}")
        items += _lines(Path(extra).read_text())
    if not items:
        raise LabError(f"instruction list '{kind}' is empty")
    return list(dict.fromkeys(items))


PAPER_N_INSTRUCTIONS = 512  # 03d_refusal_abliteration.py:143 DEFAULT_N_INSTRUCTIONS
PAPER_SEED = 42  # 03d_refusal_abliteration.py:1003, 1989 (random.seed(seed) at :1024)
_PAPER_LISTS = {"harmful": "HARMFUL_PROMPTS", "harmless": "HARMLESS_PROMPTS"}
GET_PAPER_PROMPTS = (
    "the paper's experiments/refusal_prompts.py is not shipped (its repository has no licence): "
    "git clone https://github.com/safety-research/introspection-mechanisms (commit 5d5d9b4) and point "
    "refusal.prompts_from at experiments/refusal_prompts.py"
)


def read_prompt_list(path: str | os.PathLike, kind: str) -> list[str]:
    """The `kind` (harmful / harmless) instructions of one file, in file order, duplicates kept (the paper samples
    from its lists as they are): the paper's `refusal_prompts.py` (its HARMFUL_PROMPTS / HARMLESS_PROMPTS literals,
    read with `ast`, never executed), AdvBench's harmful_behaviors.csv (column `goal`), an Alpaca-format JSON
    (`instruction` of the rows whose `input` is empty), or a text file (one per line, # comments skipped)."""
    import ast
    import csv
    import json

    p = Path(path)
    if not p.is_file():
        raise LabError(f"refusal prompts file not found: {p}; {GET_PAPER_PROMPTS}")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".py":
        name = _PAPER_LISTS[kind]
        for node in ast.parse(text).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                items = ast.literal_eval(node.value)
                if isinstance(items, list) and all(isinstance(x, str) for x in items):
                    return items
        raise LabError(f"{p} has no list of strings {name}")
    if p.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "goal" not in rows[0]:
            raise LabError(f"{p}: expected AdvBench's CSV with a 'goal' column")
        return [r["goal"] for r in rows]
    if p.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(r, dict) and "instruction" in r for r in data):
            raise LabError(f"{p}: expected an Alpaca-format JSON list of {{instruction, input, output}}")
        return [r["instruction"] for r in data if not str(r.get("input") or "").strip()]
    return _lines(text)


def paper_sample(
    harmful: Sequence[str], harmless: Sequence[str], n: int = PAPER_N_INSTRUCTIONS, seed: int = PAPER_SEED
) -> tuple[list[str], list[str]]:
    """The paper's draw: `random.seed(seed)`, then `random.sample` of min(n, len) harmful, then of harmless, from the
    same generator (03d_refusal_abliteration.py:1024 then :210-211; nothing draws from `random` in between)."""
    import random

    rng = random.Random(seed)  # random.seed(seed) seeds the module's Random the same way
    return rng.sample(list(harmful), min(n, len(harmful))), rng.sample(list(harmless), min(n, len(harmless)))


def direction_prompts(rc: RefusalConfig) -> tuple[list[str], list[str], list[str]]:
    """(harmful, harmless, held-out harmful) for the direction and the refusal check.

    Without `prompts_from`: the shipped lists (+ extra files), the last `heldout` harmful lines held out. With it: the
    paper's sample (`paper_sample`, `n_instructions` each, `sample_seed`) of the files' lists; the held-out check uses
    the first `heldout` harmful instructions the sample left out (the paper checks on its own separate list)."""
    if not rc.prompts_from:
        harmful, held = split_heldout(instructions(rc.harmful, rc.extra_harmful), rc.heldout)
        return harmful, instructions(rc.harmless, rc.extra_harmless), held
    src = Path(rc.prompts_from)
    if src.suffix != ".py" and not rc.harmless_from:
        raise LabError(f"refusal.prompts_from {src} holds harmful instructions only: set refusal.harmless_from too")
    all_harmful = read_prompt_list(src, "harmful")
    all_harmless = read_prompt_list(rc.harmless_from or src, "harmless")
    harmful, harmless = paper_sample(all_harmful, all_harmless, rc.n_instructions, rc.sample_seed)
    chosen = set(harmful)
    held = [x for x in dict.fromkeys(all_harmful) if x not in chosen][: rc.heldout]
    if not held:
        raise LabError(f"refusal.prompts_from: no harmful instruction left out of the sample of {len(harmful)}")
    return harmful, harmless, held


def split_heldout(items: Sequence[str], n_heldout: int = HELDOUT) -> tuple[list[str], list[str]]:
    """(used for the direction, held out for the refusal check): the last `n_heldout` lines are held out."""
    if not 0 <= n_heldout < len(items):
        raise LabError(f"cannot hold out {n_heldout} of {len(items)} instructions")
    cut = len(items) - n_heldout
    return list(items[:cut]), list(items[cut:])


def chat_prompt(lm: Any, instruction: str) -> str:
    """A single user turn with the generation prompt, in the model's own template (raw text without one)."""
    if lm.tokenizer.chat_template is None:
        return instruction
    return lm.chat([{"role": "user", "content": instruction}], add_generation_prompt=True)


@torch.no_grad()
def instruction_activations(
    lm: Any, items: Sequence[str], position: int = -2, layers: Sequence[int] | None = None, batch_size: int = 16
) -> torch.Tensor:
    """`resid_post` of every block (or `layers`) at `position` (negative) of each templated prompt:
    [n_layers, len(items), d_model], float32, CPU."""
    from lab.steer import interventions as iv

    if position >= 0:
        raise LabError(f"position must be negative (counted from the end of the prompt), got {position}")
    layers = list(range(lm.n_layers)) if layers is None else [lm.check_layer(x) for x in layers]
    sites = [f"{SITE}.{x}" for x in layers]
    out: list[torch.Tensor] = []
    tok = lm.tokenizer
    for i in range(0, len(items), batch_size):
        enc = tok(
            [chat_prompt(lm, s) for s in items[i : i + batch_size]],
            return_tensors="pt",
            padding=True,
            add_special_tokens=lm.tokenizer.chat_template is None,
        )
        enc = {k: v.to(lm.device) for k, v in enc.items()}
        with iv.capture(lm.model, sites, stop=True) as acts:
            lm.model(**enc, use_cache=False)
        out.append(torch.stack([acts[s][0][:, position, :].float().cpu() for s in sites]))
    return torch.cat(out, dim=1)


def mean_difference(harmful: torch.Tensor, harmless: torch.Tensor) -> torch.Tensor:
    """Unit-norm mean(harmful) − mean(harmless) along the items axis: [L, N, d] → [L, d] (or [N, d] → [d])."""
    diff = harmful.float().mean(-2) - harmless.float().mean(-2)
    return diff / diff.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class RefusalDirections:
    """One unit direction per layer (row L belongs to `resid_post.L`), with how it was made."""

    directions: torch.Tensor  # [n_layers, d_model]
    position: int
    model: str
    n_harmful: int
    n_harmless: int
    instructions_version: str = ""
    site: str = SITE
    raw_norms: tuple[float, ...] = ()  # ‖mean diff‖ per layer before normalising

    def layer(self, layer: int) -> torch.Tensor:
        return self.directions[layer]

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        save_file(
            {"directions": self.directions.contiguous(), "raw_norms": torch.tensor(self.raw_norms)},
            str(tmp),
            metadata={
                "position": str(self.position),
                "model": self.model,
                "n_harmful": str(self.n_harmful),
                "n_harmless": str(self.n_harmless),
                "site": self.site,
                "instructions_version": self.instructions_version,
                "layers": str(self.directions.shape[0]),
            },
        )
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> RefusalDirections:
        from safetensors import safe_open

        if not Path(path).is_file():
            raise LabError(f"refusal directions not found: {path}")
        with safe_open(str(path), "pt") as f:
            m = f.metadata()
            raw = tuple(float(x) for x in f.get_tensor("raw_norms").tolist())
            return cls(
                f.get_tensor("directions"),
                int(m["position"]),
                m["model"],
                int(m["n_harmful"]),
                int(m["n_harmless"]),
                m.get("instructions_version", ""),
                m.get("site", SITE),
                raw,
            )


def refusal_direction(
    lm: Any, harmful: Sequence[str], harmless: Sequence[str], position: int = -2, batch_size: int = 16
) -> RefusalDirections:
    """Per-layer refusal directions of a loaded model from two instruction lists."""
    a = instruction_activations(lm, harmful, position, batch_size=batch_size)
    b = instruction_activations(lm, harmless, position, batch_size=batch_size)
    raw = (a.mean(1) - b.mean(1)).norm(dim=-1)
    version = hashlib.sha256("\n".join([*harmful, "--", *harmless]).encode()).hexdigest()[:12]
    return RefusalDirections(
        mean_difference(a, b),
        position,
        lm.name,
        len(harmful),
        len(harmless),
        version,
        raw_norms=tuple(float(x) for x in raw),
    )


_ATTN_OUT = ("o_proj", "out_proj", "dense", "c_proj")
_MLP_OUT = ("down_proj", "fc2", "c_proj", "dense_4h_to_h")
_POST_NORMS = ("post_feedforward_layernorm", "post_attn_norm", "post_mlp_layernorm")


@dataclass(frozen=True)
class RefusalConfig:
    harmful: str = field(default="harmful", metadata={"help": "'harmful' (shipped) or a file of instructions"})
    harmless: str = field(default="harmless", metadata={"help": "'harmless' (shipped) or a file"})
    extra_harmful: str | None = field(default=None, metadata={"help": "a local file of more harmful instructions"})
    extra_harmless: str | None = field(default=None, metadata={"help": "a local file of more harmless instructions"})
    directions: str = field(default="", metadata={"help": "a saved refusal_directions.safetensors to reuse"})
    position: int = field(default=-2, metadata={"help": "prompt position read (-2: the paper's code; -1: last token)"})
    heldout: int = field(default=32, metadata={"help": "last harmful lines kept out of the direction (refusal check)"})
    direction_layer: int | None = field(
        default=None,
        metadata={"help": "one direction (this layer's) for every layer; empty: each layer its own direction"},
    )
    weights: tuple[float, ...] = field(default=(), metadata={"help": "per-layer ablation weights; empty = 1.0"})
    method: Literal["weights", "interventions"] = field(
        default="weights", metadata={"help": "weights: orthogonalise, save <output_dir>/model; interventions: hooks"}
    )
    sites: Literal["writers", "resid"] = field(
        default="writers",
        metadata={
            "help": "interventions only: every residual writer (== weights) or every block output (the paper's code)"
        },
    )
    check_tokens: int = field(default=32, metadata={"help": "new tokens per refusal-check reply"})
    prompts_from: str = field(
        default="",
        metadata={
            "help": "the paper's experiments/refusal_prompts.py (both lists; not shipped: clone "
            "safety-research/introspection-mechanisms), or AdvBench's harmful_behaviors.csv / a .txt of harmful "
            "instructions (then harmless_from); sampled as the paper (n_instructions each, sample_seed); empty: the "
            "shipped lists"
        },
    )
    harmless_from: str = field(
        default="", metadata={"help": "with a harmful-only prompts_from: an Alpaca-format JSON, the .py or a .txt"}
    )
    n_instructions: int = field(default=512, metadata={"help": "prompts_from: instructions sampled per list (paper)"})
    sample_seed: int = field(default=42, metadata={"help": "prompts_from: random.seed of the paper's draw"})


def per_layer(directions: torch.Tensor, n_layers: int, weights: Any = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit directions [n_layers, d], weights [n_layers]) from one or per-layer directions and weights."""
    r = torch.as_tensor(directions, dtype=torch.float32)
    r = r.unsqueeze(0).expand(n_layers, -1) if r.ndim == 1 else r
    if r.shape[0] != n_layers:
        raise LabError(f"got {r.shape[0]} directions for {n_layers} layers")
    w = torch.as_tensor(weights, dtype=torch.float32)
    w = w.expand(n_layers) if w.ndim == 0 else w
    if w.shape[0] != n_layers:
        raise LabError(f"got {w.shape[0]} ablation weights for {n_layers} layers")
    return r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12), w


def ablation_edits(directions: torch.Tensor, n_layers: int, weights: Any = 1.0, sites: str = "writers") -> list[Ablate]:
    """(a) the interventions: `writers` = embed + attn_out.L + mlp_out.L (equals `orthogonalize`), or `resid` =
    resid_post.L of every block (the paper's code: hooks on each layer's output, per-layer directions)."""
    r, w = per_layer(directions, n_layers, weights)
    if sites == "resid":
        return [Ablate(f"resid_post.{L}", r[L], float(w[L])) for L in range(n_layers)]
    if sites != "writers":
        raise LabError(f"ablation sites must be 'writers' or 'resid', got '{sites}'")
    ops = [Ablate("embed", r[0], float(w[0]))]
    for L in range(n_layers):
        ops += [Ablate(f"attn_out.{L}", r[L], float(w[L])), Ablate(f"mlp_out.{L}", r[L], float(w[L]))]
    return ops


def _child(module: torch.nn.Module, names: Sequence[str], what: str) -> torch.nn.Linear:
    for n in names:
        m = getattr(module, n, None)
        if isinstance(m, torch.nn.Linear):
            return m
    raise LabError(f"cannot find the {what} projection of {type(module).__name__} (looked for {', '.join(names)})")


def writers(model: Any) -> list[tuple[str, Any, int]]:
    """(name, Linear / embedding / fused expert weight [E, d, d_ff], layer whose direction applies) for every weight
    that writes to the residual stream; a block that normalises its sublayers' outputs is refused in one line."""
    out: list[tuple[str, Any, int]] = [("embed", model.get_input_embeddings(), 0)]
    for L, block in enumerate(decoder_layers(model)):
        post = [n for n in _POST_NORMS if hasattr(block, n)]
        if post:
            raise LabError(
                f"method 'weights' cannot abliterate {type(block).__name__}: it normalises each sublayer's output "
                f"({post[0]}) after the projection, so orthogonalised weights are not the direction ablation; "
                "use method: interventions (exact there)"
            )
        if not hasattr(block, "self_attn") or not hasattr(block, "mlp"):
            raise LabError(f"block {L} of {type(block).__name__} has no self_attn/mlp to orthogonalise")
        out.append((f"attn_out.{L}", _child(block.self_attn, _ATTN_OUT, "attention output"), L))
        experts = getattr(block.mlp, "experts", None)
        if experts is None:
            out.append((f"mlp_out.{L}", _child(block.mlp, _MLP_OUT, "MLP down"), L))
            continue
        fused = getattr(experts, "down_proj", None)
        if isinstance(fused, torch.nn.Parameter) and fused.ndim == 3:  # transformers 5: [experts, d, d_ff]
            out.append((f"mlp_out.{L}.experts", fused, L))
        elif isinstance(experts, torch.nn.ModuleList):
            out += [(f"mlp_out.{L}.expert{e}", _child(x, _MLP_OUT, "expert down"), L) for e, x in enumerate(experts)]
        else:
            raise LabError(f"cannot find the expert down-projections of {type(block.mlp).__name__}")
        for shared in ("shared_expert", "shared_experts"):
            if hasattr(block.mlp, shared):
                out.append((f"mlp_out.{L}.{shared}", _child(getattr(block.mlp, shared), _MLP_OUT, "shared down"), L))
    return out


def untie_lm_head(model: Any) -> bool:
    """Give `lm_head` its own copy of the weights if it shares them with the embedding; True if it did."""
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    if head is None or head.weight.data_ptr() != emb.weight.data_ptr():
        return False
    head.weight = torch.nn.Parameter(emb.weight.detach().clone(), requires_grad=emb.weight.requires_grad)
    for cfg in (model.config, getattr(model.config, "text_config", None)):
        if cfg is not None and hasattr(cfg, "tie_word_embeddings"):
            cfg.tie_word_embeddings = False
    return True


@torch.no_grad()
def orthogonalize(model: Any, directions: torch.Tensor, weights: Any = 1.0) -> Any:
    """(b) fold the projection into the residual writers' weights, in place (lm_head untied first)."""
    n = len(decoder_layers(model))
    r, w = per_layer(directions, n, weights)
    mods = writers(model)  # validates the architecture before anything changes
    untie_lm_head(model)
    for name, mod, L in mods:
        W = mod.data if isinstance(mod, torch.nn.Parameter) else mod.weight.data
        u = r[L].to(W.device, torch.float32)
        if name == "embed":  # [V, d]: rows are written
            W.copy_((W.float() - w[L] * (W.float() @ u)[:, None] * u[None, :]).to(W.dtype))
            continue
        if W.ndim == 3:  # fused experts [E, d, d_ff]: each expert's columns
            W.copy_(
                (W.float() - w[L] * u[None, :, None] * torch.einsum("d,edf->ef", u, W.float())[:, None]).to(W.dtype)
            )
            continue
        W.copy_((W.float() - w[L] * u[:, None] * (u @ W.float())[None, :]).to(W.dtype))  # Linear: [d, d_in]
        if getattr(mod, "bias", None) is not None:
            b = mod.bias.data
            b.copy_((b.float() - w[L] * (b.float() @ u) * u).to(b.dtype))
    return model


@torch.no_grad()
def residual_projection(model: Any, directions: torch.Tensor) -> dict[str, float]:
    """Per writer: max |r̂ · output column| / max ‖output column‖ — how much each writer can still write along r̂
    (0 after a full orthogonalisation, up to float error)."""
    n = len(decoder_layers(model))
    r, _ = per_layer(directions, n)
    out = {}
    for name, mod, L in writers(model):
        W = (mod if isinstance(mod, torch.nn.Parameter) else mod.weight).detach().float()
        u = r[L].to(W.device)
        cols = W if name == "embed" else W.transpose(-1, -2).reshape(-1, W.shape[-2])  # one row per write: [*, d]
        rel = (cols @ u).abs().max() / cols.norm(dim=-1).max().clamp_min(1e-12)
        if getattr(mod, "bias", None) is not None:
            rel = torch.maximum(rel, (mod.bias.float() @ u).abs() / mod.bias.float().norm().clamp_min(1e-12))
        out[name] = float(rel)
    return out


def save_model(lm: Any, out_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save an (abliterated) model + tokenizer as a checkpoint directory that `lab.model.loading.load(dir)` loads."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = lm.model
    if getattr(model, "hf_quantizer", None) is not None:  # a GGUF load: save the dequantised float weights
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    if meta:
        (out / "abliteration.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out


# --- refusal check: a simple phrase matcher over short greedy replies (not a judge) ---
REFUSAL_PHRASES = tuple(_lines(resources.files("lab").joinpath("data/refusal_phrases.txt").read_text()))
_WS = re.compile(r"\s+")


def is_refusal(text: str) -> bool:
    """True when a reply contains a stock refusal phrase (case-insensitive; curly apostrophes normalised)."""
    t = _WS.sub(" ", text.lower().replace("\u2019", "'"))
    return any(p in t for p in REFUSAL_PHRASES)


@torch.no_grad()
def greedy_replies(lm: Any, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """Greedy replies to single user turns (the refusal check's generations)."""

    tok, out = lm.tokenizer, []
    for i in range(0, len(prompts), batch_size):
        enc = tok(
            [chat_prompt(lm, p) for p in prompts[i : i + batch_size]],
            return_tensors="pt",
            padding=True,
            add_special_tokens=tok.chat_template is None,
        )
        enc = {k: v.to(lm.device) for k, v in enc.items()}
        gen = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        out += [s.strip() for s in tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)]
    return out


# --- the jobs' model-side steps: one call each on a model replica, results only ---
@dataclass(frozen=True)
class Arms:
    """What jobs.abliteration's model-side steps send back to the driver."""

    directions: RefusalDirections
    ablated: torch.Tensor  # what is removed: `direction_layer`'s direction [d], or every layer's [n_layers, d]
    n_layers: int
    replies: dict[str, list[str]]  # arm ("original", "abliterated") → greedy replies to the held-out instructions
    model_dir: str | None = None  # the abliterated checkpoint (method: weights)


def _ablation_weights(rc: RefusalConfig) -> Any:
    return torch.tensor(rc.weights) if rc.weights else 1.0


def arm_edits(rc: RefusalConfig, arms: Arms) -> tuple[list[Ablate], str]:
    """(method: interventions) the ablation edits and their tag in trial ids (by the directions, weights and sites)."""
    edits = ablation_edits(arms.ablated, arms.n_layers, _ablation_weights(rc), rc.sites)
    raw = arms.ablated.detach().float().cpu().numpy().tobytes() + f"{list(rc.weights)}|{rc.sites}".encode()
    return edits, f"ablate-{rc.sites}@{hashlib.sha256(raw).hexdigest()[:12]}"


def check_original(
    lm: Any,
    rc: RefusalConfig,
    harmful: Sequence[str],
    harmless: Sequence[str],
    held: Sequence[str],
    given: RefusalDirections | None = None,
) -> Arms:
    """On a replica of the original model: its refusal directions (`given`, or from the two lists) and its greedy
    replies to the held-out harmful instructions `held`."""
    rd = given if given is not None else refusal_direction(lm, harmful, harmless, rc.position)
    ablated = rd.directions if rc.direction_layer is None else rd.layer(lm.check_layer(rc.direction_layer))
    return Arms(rd, ablated, lm.n_layers, {"original": greedy_replies(lm, held, rc.check_tokens)})


def abliterate(lm: Any, rc: RefusalConfig, arms: Arms, held: Sequence[str], model_dir: str | os.PathLike) -> Arms:
    """After `check_original`, on the same replica: `weights` orthogonalises its writers in place and saves the
    checkpoint to `model_dir` (its replies equal the saved checkpoint's: the same weights), `interventions` applies the
    ablation edits for the replies only; `arms` plus the abliterated model's replies (and checkpoint)."""
    from lab.steer import interventions as iv

    edits: list[Ablate] = []
    if rc.method == "weights":
        orthogonalize(lm.model, arms.ablated, _ablation_weights(rc))
        meta = dict(source=lm.name, position=rc.position, direction_layer=rc.direction_layer, weights=list(rc.weights))
        arms = dataclasses.replace(arms, model_dir=str(save_model(lm, model_dir, meta)))
    else:
        edits = arm_edits(rc, arms)[0]
    with iv.apply(lm.model, edits):
        replies = greedy_replies(lm, held, rc.check_tokens)
    return dataclasses.replace(arms, replies=arms.replies | {"abliterated": replies})


def prepare_arms(
    lm: Any,
    rc: RefusalConfig,
    harmful: Sequence[str],
    harmless: Sequence[str],
    held: Sequence[str],
    given: RefusalDirections | None,
    model_dir: str | os.PathLike,
    then_abliterate: bool = True,
) -> Arms:
    """jobs.abliteration's model-side step in one call: `check_original`, then (`then_abliterate`: on a replica that no
    sweep shares) `abliterate`. `weights` on blocks it cannot orthogonalise is refused first, before the directions."""
    if rc.method == "weights":
        writers(lm.model)  # a post-sublayer-norm block (Gemma 3, OLMo 3): one line now, not after minutes of passes
    arms = check_original(lm, rc, harmful, harmless, held, given)
    return abliterate(lm, rc, arms, held, model_dir) if then_abliterate else arms


def vectors_and_direction(
    lm: Any,
    concepts: Sequence[str],
    layer: int,
    template: str,
    baseline: str,
    cache_dir: str | None,
    key: str,
    lists: tuple[Sequence[str], Sequence[str]] | None = None,
) -> tuple[dict[tuple[str, int], Any], torch.Tensor | None]:
    """jobs.geometry's model-side step: the concept vectors at `layer` (lab.steer.concepts.concept_vectors) and, given
    (harmful, harmless) instruction `lists`, their refusal direction there (mean difference at position -2)."""
    from lab.steer.concepts import concept_vectors

    vecs, _ = concept_vectors(lm, concepts, [layer], template, baseline, cache_dir, key)
    if lists is None:
        return vecs, None
    a, b = (instruction_activations(lm, x, -2, [layer]) for x in lists)
    return vecs, mean_difference(a, b)[0]
