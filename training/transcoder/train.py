"""Transcoders for a loaded model: its activations on the corpus, fitted per layer, cached on disk.

    train_transcoders(lm, layers, texts, cfg) -> {layer: Transcoder}   collect once, fit each, measure on held-out
    transcoders_for(lm, layers, cache_dir, cfg) -> {layer: Transcoder} the same, trained once per (model, layer,
                                                                       config, corpus) and cached
    from_source(lm, layers, src) -> {layer: Transcoder}                a feature job's `transcoders:` section: load
                                                                       from a folder, or `transcoders_for`

Activations are `mlp_in.L` / `mlp_out.L` of fixed-length windows of the tokenised corpus (training/transcoder/
corpus.py), read with `capture(..., stop=True)` so the forward pass ends after the deepest block needed; the first
position of every window (an attention sink with outlying norms) is dropped. Windows are split into train /
held-out at random (seeded). The fit itself: training/transcoder/fit.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from lab.errors import LabError
from lab.steer.transcoder import Transcoder, load_transcoder
from training.transcoder.fit import FIT_VERSION, TranscoderConfig, evaluate, fit_transcoder


def windows(tokenizer: Any, texts: Sequence[str], seq_len: int, max_tokens: int) -> torch.Tensor:
    """The texts tokenised and joined (EOS between them) into [n, seq_len] windows, at most ~max_tokens in all."""
    sep = tokenizer.eos_token_id
    stream: list[int] = []
    limit = (max_tokens // (seq_len - 1) + 1) * seq_len
    for t in texts:
        stream += tokenizer(t, add_special_tokens=False)["input_ids"] + ([sep] if sep is not None else [])
        if len(stream) >= limit:
            break
    n = min(len(stream), limit) // seq_len
    if n == 0:
        raise LabError(f"the corpus has {len(stream)} tokens, fewer than one window of {seq_len}")
    return torch.tensor(stream[: n * seq_len]).view(n, seq_len)


@torch.no_grad()
def collect_activations(
    model: Any, ids: torch.Tensor, layers: Sequence[int], batch: int = 8
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, (mlp_in.L, mlp_out.L) at every position but the first of each window: two [n·(T−1), d] float32
    tensors. One forward pass serves every layer (stopped after the deepest)."""
    from lab.steer.interventions import capture

    dev = next(model.parameters()).device
    sites = [f"{kind}.{layer}" for layer in layers for kind in ("mlp_in", "mlp_out")]
    got: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    for i in range(0, ids.shape[0], batch):
        with capture(model, sites, stop=True) as acts:
            model(input_ids=ids[i : i + batch].to(dev), use_cache=False)
        for site in sites:
            got[site].append(acts[site][0][:, 1:].float().cpu().flatten(0, 1))
    return {layer: (torch.cat(got[f"mlp_in.{layer}"]), torch.cat(got[f"mlp_out.{layer}"])) for layer in layers}


def train_transcoders(
    lm: Any,
    layers: Sequence[int],
    texts: Sequence[str],
    cfg: TranscoderConfig = TranscoderConfig(),
    on_layer: Callable[[int, Transcoder], None] | None = None,
) -> dict[int, Transcoder]:
    """Collect mlp_in/mlp_out of every layer in one pass over `texts`, then per layer fit on most windows and measure
    on the held-out ones (the same activations training it alone would see); `on_layer` gets each as it is done."""
    for layer in layers:
        lm.check_layer(layer)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    out = {}
    try:
        t0 = time.time()
        ids = windows(lm.tokenizer, texts, cfg.seq_len, cfg.max_tokens)
        ids = ids[torch.randperm(ids.shape[0], generator=torch.Generator().manual_seed(cfg.seed))]
        n_test = max(1, round(cfg.holdout * ids.shape[0]))
        acts = collect_activations(lm.model, ids, layers, cfg.collect_batch)
        cut = (ids.shape[0] - n_test) * (cfg.seq_len - 1)
        collect_s = round(time.time() - t0, 1)
        for layer in layers:
            x, y = acts.pop(layer)
            tc = fit_transcoder(x[:cut], y[:cut], cfg)
            figures = evaluate(tc, x[cut:], y[cut:])
            meta = {
                "model": lm.name,
                "layer": layer,
                "site_in": f"mlp_in.{layer}",
                "site_out": f"mlp_out.{layer}",
                "config": asdict(cfg),
                "collect_s": collect_s,
                "collect_shared_by": len(layers),
                **(tc.meta or {}),
                **figures,
            }
            out[layer] = Transcoder(tc.w_enc, tc.w_dec, tc.b_enc, tc.b_dec, None, tc.w_skip, meta)
            if on_layer is not None:
                on_layer(layer, out[layer])
    finally:
        torch.set_num_threads(threads)
    return out


def train_transcoder(
    lm: Any, layer: int, texts: Sequence[str], cfg: TranscoderConfig = TranscoderConfig()
) -> Transcoder:
    return train_transcoders(lm, [layer], texts, cfg)[layer]


def default_dir(cache_dir: str | os.PathLike | None = None) -> str:
    """`cache_dir`, or `transcoders/` under the lab's model cache."""
    from lab.model.embedded import default_cache_dir

    return str(cache_dir or default_cache_dir() / "transcoders")


def texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode() + b"\0")
    return h.hexdigest()[:16]


def cache_key(model_name: str, layer: int, cfg: TranscoderConfig, digest: str = "") -> str:
    """Model, layer, training config, the corpus text itself (a changed prompt file retrains) and the fit's version."""
    from training.transcoder.corpus import CORPUS_VERSION

    blob = json.dumps(
        {
            "model": model_name,
            "layer": layer,
            "config": asdict(cfg),
            "corpus": digest,
            "builder": CORPUS_VERSION,
            "fit": FIT_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_path(
    cache_dir: str | os.PathLike, model_name: str, layer: int, cfg: TranscoderConfig, digest: str = ""
) -> Path:
    return Path(cache_dir) / f"{model_name}-mlp{layer}-{cache_key(model_name, layer, cfg, digest)}.safetensors"


def transcoders_for(
    lm: Any, layers: Sequence[int], cache_dir: str | os.PathLike, cfg: TranscoderConfig = TranscoderConfig()
) -> dict[int, Transcoder]:
    """The cached transcoder of each layer for (model, layer, config, corpus); the missing ones are trained together
    (one activation pass) and saved (`meta["from_cache"]` says which came from the cache)."""
    from training.transcoder.corpus import texts

    corpus = texts(lm, cfg.sources)
    digest = texts_digest(corpus)
    out: dict[int, Transcoder] = {}
    for layer in layers:
        lm.check_layer(layer)
        path = cache_path(cache_dir, lm.name, layer, cfg, digest)
        if path.is_file():
            out[layer] = load_transcoder(path)
            (out[layer].meta or {})["from_cache"] = True

    def save(layer: int, tc: Transcoder) -> None:  # as each layer is fitted: a crash keeps the finished ones
        path = cache_path(cache_dir, lm.name, layer, cfg, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tc.save(tmp)
        os.replace(tmp, path)  # atomic: a concurrent job sees the whole file or none
        out[layer] = tc

    missing = [layer for layer in dict.fromkeys(layers) if layer not in out]
    if missing:
        train_transcoders(lm, missing, corpus, cfg, on_layer=save)
    return {layer: out[layer] for layer in layers}


def transcoder_for(
    lm: Any, layer: int, cache_dir: str | os.PathLike, cfg: TranscoderConfig = TranscoderConfig()
) -> Transcoder:
    """The cached transcoder for (model, layer, config, corpus); trained on the corpus and saved if absent
    (`meta["from_cache"]` says which)."""
    return transcoders_for(lm, [layer], cache_dir, cfg)[layer]


def from_source(lm: Any, layers: Sequence[int], src: Any) -> dict[int, Transcoder]:
    """One transcoder per layer for a feature job's `transcoders:` section (`lab.experiments.dose_response.
    TranscoderSource`): loaded from `src.dir` (<dir>/layer<L>.safetensors or a Gemma Scope 2 folder
    <dir>/layer_<L>_*), or trained once per (model, layer, config) and cached (the missing layers share one
    activation pass)."""
    if not src.dir:
        from lab.config import from_dict

        cfg = from_dict(TranscoderConfig, dict(src.train), "transcoders.train")
        return transcoders_for(lm, layers, default_dir(src.cache_dir), cfg)
    out: dict[int, Transcoder] = {}
    root = Path(src.dir)
    for lay in layers:
        cand = [root / f"layer{lay}.safetensors", *sorted(root.glob(f"layer_{lay}_*"))]
        hit = next((c for c in cand if c.exists()), None)
        if hit is None:
            raise LabError(f"no transcoder for layer {lay} in {root} (expected layer{lay}.safetensors)")
        out[lay] = load_transcoder(hit)
    return out
