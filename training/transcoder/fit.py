"""Fit a transcoder (MLP input → MLP output of one block) to activation rows, and measure it on held-out rows.

Recipe: ReLU features, loss = mean squared error (per element, on activations centred and scaled to unit RMS) + λ ·
Σ_i f_i · ‖w_dec,i‖ (decoder-norm-weighted L1), a linear skip (initialised at the least-squares map), Adam, a few
epochs. Decoder rows are renormalised to unit norm after every step (so the weighted L1 is λ · Σ_i f_i in training):
with free norms, Adam shrinks every decoder row to zero within a few hundred steps and the features carry nothing.
`init="data"` (default) starts feature i as "tokens like training token t_i" (encoder row t_i/‖t_i‖, bias −‖t_i‖/2,
decoder row = t_i's residual after the skip): measured on layer 12 of the embedded model (2,048 features, 50k
training tokens, 2 epochs, λ 0.003) it reached held-out FVE 0.73 at L0 4 where a random init stayed at the skip's
0.61 (the features learned nothing in 390 steps).
The normalisation is folded back into the weights, so the returned `Transcoder` reads and writes raw activations.
Held-out figures (`evaluate`): `fve` (1 − SSE / total variance of the MLP output), `fve_linear` (the skip map alone),
`l0` (mean active features per token), `dead_frac` (features never active on held-out tokens).
Where the rows come from (a model's activations on the corpus) and the cache: training/transcoder/train.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from lab.errors import LabError
from lab.steer.transcoder import Transcoder

FIT_VERSION = 2  # of the fit, in the cache key: 2 = the skip map solved reproducibly in float64 (`least_squares`)


@dataclass(frozen=True)
class TranscoderConfig:
    n_features: int = field(default=4608, metadata={"help": "dictionary size (ReLU features), >= 1"})
    l1: float = field(default=0.003, metadata={"help": "L1 weight λ (decoder-norm-weighted, 5 % warm-up), >= 0"})
    epochs: int = field(default=2, metadata={"help": "passes over the training tokens, >= 1"})
    batch_size: int = field(default=256, metadata={"help": "tokens per Adam step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate, > 0"})
    seq_len: int = field(default=128, metadata={"help": "tokens per window, >= 2 (its first token is dropped)"})
    max_tokens: int = field(default=250_000, metadata={"help": "about this many corpus tokens, train + held-out"})
    holdout: float = field(default=0.05, metadata={"help": "share of windows held out (fve, l0, dead_frac), in (0, 1)"})
    skip: bool = field(default=True, metadata={"help": "add a linear skip map (initialised at the least-squares fit)"})
    init: str = field(default="data", metadata={"help": "data: rows from training tokens and residuals; or random"})
    sources: tuple[str, ...] = field(
        default=("dialogues", "pydoc", "docstrings"), metadata={"help": "training.transcoder.corpus"}
    )
    seed: int = field(default=0, metadata={"help": "window shuffle / held-out split, init, batch order"})
    threads: int = field(default=2, metadata={"help": "torch threads (in the cache key: results may differ)"})
    collect_batch: int = field(default=8, metadata={"help": "windows per forward pass while collecting activations"})

    def __post_init__(self) -> None:
        if self.init not in ("data", "random"):
            raise LabError(f"transcoder init must be 'data' or 'random', got {self.init!r}")
        if self.n_features < 1 or self.epochs < 1 or self.batch_size < 1 or self.seq_len < 2:
            raise LabError("transcoder config: n_features, epochs, batch_size must be ≥ 1 and seq_len ≥ 2")
        if not 0 < self.holdout < 1 or self.l1 < 0 or self.lr <= 0:
            raise LabError("transcoder config: holdout must be in (0, 1), l1 ≥ 0 and lr > 0")


def least_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """argmin_W ‖xW − y‖, solved in float64 through the d × d normal equations (Cholesky; where x is rank-deficient,
    the minimum-norm solution by SVD) and returned as float32. The float32 LAPACK solve it replaces was not
    reproducible: on the embedded model's layer 12 (28k rows × 576, condition number ~6,000) two calls on the same
    tensors in one process gave solutions up to 0.32 apart, which moved the trained transcoder's held-out FVE by up to
    ±0.05 from run to run (pivoted QR, gelsy, is not bit-stable even in float64 here; Cholesky is, and takes well under
    a second). tests/analysis/test_transcoders.py checks repeated solves and fits agree bit for bit."""
    xd, yd = x.double(), y.double()
    gram, rhs = xd.T @ xd, xd.T @ yd
    chol, info = torch.linalg.cholesky_ex(gram)
    w = torch.cholesky_solve(rhs, chol) if int(info) == 0 else torch.linalg.lstsq(gram, rhs, driver="gelsd").solution
    return w.float().contiguous()


def fit_transcoder(x: torch.Tensor, y: torch.Tensor, cfg: TranscoderConfig) -> Transcoder:
    """Fit on (x, y) rows; returns the transcoder in raw units (meta: training loss, time)."""
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    mx, my = x.mean(0), y.mean(0)
    sx, sy = float((x - mx).pow(2).mean().sqrt()), float((y - my).pow(2).mean().sqrt())
    xn, yn = (x - mx) / sx, (y - my) / sy
    d_in, d_out, n = x.shape[1], y.shape[1], cfg.n_features
    w_skip = least_squares(xn, yn).requires_grad_() if cfg.skip else None
    b_enc = torch.zeros(n)
    if cfg.init == "data":  # feature i starts as "tokens like token t_i", writing t_i's residual after the skip
        pick = torch.randperm(xn.shape[0], generator=g)[:n]
        xi = xn[pick]
        res = yn[pick] - (xi @ w_skip if w_skip is not None else 0)
        w_enc = (xi / xi.norm(dim=1, keepdim=True)).T.contiguous()
        w_dec = res.detach().clone()
        b_enc = -0.5 * xi.norm(dim=1)  # fires where the cosine with t_i exceeds ~0.5
    else:
        w_enc = 0.1 * torch.randn(d_in, n, generator=g) / d_in**0.5
        w_dec = torch.randn(n, d_out, generator=g)
    w_enc, b_enc = w_enc.requires_grad_(), b_enc.requires_grad_()
    w_dec = (w_dec / w_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)).requires_grad_()
    b_dec = torch.zeros(d_out, requires_grad=True)
    params = [w_enc, w_dec, b_enc, b_dec] + ([w_skip] if w_skip is not None else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)
    steps_per_epoch = max(1, xn.shape[0] // cfg.batch_size)
    total, step, loss_v = steps_per_epoch * cfg.epochs, 0, float("nan")
    for _ in range(cfg.epochs):
        order = torch.randperm(xn.shape[0], generator=g)
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb, yb = xn[idx], yn[idx]
            f = torch.relu(xb @ w_enc + b_enc)
            pred = f @ w_dec + b_dec + (xb @ w_skip if w_skip is not None else 0)
            warm = min(1.0, (step + 1) / max(1, total // 20))  # L1 warm-up over the first 5 % of steps
            loss = (pred - yb).pow(2).mean() + warm * cfg.l1 * (f * w_dec.norm(dim=1)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # unit decoder rows: under Adam a free norm would shrink to 0 and dodge the L1
                w_dec /= w_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
            step, loss_v = step + 1, float(loss.detach())
    with torch.no_grad():  # fold the normalisation into the weights
        we, be, wd, bd = w_enc / sx, b_enc - (mx / sx) @ w_enc, w_dec * sy, b_dec * sy + my
        ws = None
        if w_skip is not None:
            ws = w_skip * (sy / sx)
            bd = bd - (mx / sx) @ w_skip * sy
    meta = {"train_loss": loss_v, "train_tokens": int(x.shape[0]), "steps": step, "train_s": round(time.time() - t0, 1)}
    return Transcoder(
        we.detach(), wd.detach(), be.detach(), bd.detach(), None, None if ws is None else ws.detach(), meta
    )


@torch.no_grad()
def evaluate(tc: Transcoder, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> dict[str, float]:
    """Held-out FVE, FVE of the skip map alone, L0 and the fraction of features never active."""
    sse = sse_lin = 0.0
    l0 = 0.0
    alive = torch.zeros(tc.n_features, dtype=torch.bool)
    for i in range(0, x.shape[0], batch):
        xb, yb = x[i : i + batch], y[i : i + batch]
        f = tc.encode(xb)
        sse += float((tc.decode(f, xb) - yb).pow(2).sum())
        if tc.w_skip is not None:
            sse_lin += float((xb @ tc.w_skip + tc.b_dec - yb).pow(2).sum())
        active = f > 0
        l0 += float(active.sum())
        alive |= active.any(0)
    sst = float((y - y.mean(0)).pow(2).sum())
    out = {
        "fve": 1 - sse / sst,
        "l0": l0 / x.shape[0],
        "dead_frac": 1 - float(alive.float().mean()),
        "eval_tokens": int(x.shape[0]),
    }
    if tc.w_skip is not None:
        out["fve_linear"] = 1 - sse_lin / sst
    return out
