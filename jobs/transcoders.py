"""Train (or reuse) transcoders: `python -m jobs.transcoders --config configs/transcoders-demo.yaml`.

Collect mlp_in / mlp_out of every layer not yet cached in one pass over the corpus (training/transcoder/corpus.py),
fit each (training/transcoder/fit.py), cache under `cache_dir` keyed by model / layer / config / corpus
(training/transcoder/train.py), and report held-out FVE, L0 and dead fraction (one MLflow run). Other jobs (feature
regression, gates) call `transcoders_for` with the same cache and config and reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jobs.cli import Job, configure
from lab.config import ModelConfig
from lab.errors import LabError
from lab.run.tracking import TrackingConfig
from training.transcoder.fit import TranscoderConfig
from training.transcoder.train import default_dir as cache_dir, transcoders_for


@dataclass(frozen=True)
class TranscodersJob:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model whose MLPs are transcoded"})
    layers: tuple[int, ...] = field(default=(12,), metadata={"help": "0-based blocks; cached ones are reused"})
    transcoder: TranscoderConfig = field(default_factory=TranscoderConfig, metadata={"help": "training (in cache key)"})
    cache_dir: str | None = field(default=None, metadata={"help": "default: <model cache>/transcoders"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="transcoders"), metadata={"help": "MLflow; one run"}
    )
    output_dir: str = field(default="results/transcoders", metadata={"help": "transcoders.csv: held-out figures"})

    def __post_init__(self) -> None:
        if not self.layers:
            raise LabError("layers must name at least one layer")


def main(argv: list[str] | None = None) -> int:
    """Train or load the transcoders of --config; exit 0 on success, 2 on bad input."""
    with Job(__name__, argv) as job:
        import time

        import pandas as pd

        from lab.config import flatten, to_dict
        from lab.model import loading
        from lab.reporting import report

        cfg, _ = configure(TranscodersJob, __doc__, argv, plan=lambda c: (len(c.layers), "transcoders (layers)"))
        t0 = time.time()
        lm = loading.load(cfg.model)
        rows = []
        for layer, tc in transcoders_for(lm, cfg.layers, cache_dir(cfg.cache_dir), cfg.transcoder).items():
            m = tc.meta or {}
            cached = bool(m.get("from_cache"))
            rows.append(
                {
                    "layer": layer,
                    "cached": cached,
                    **{
                        k: m.get(k)
                        for k in (
                            "fve",
                            "fve_linear",
                            "l0",
                            "dead_frac",
                            "eval_tokens",
                            "train_tokens",
                            "collect_s",
                            "train_s",
                        )
                    },
                }
            )
            r = rows[-1]
            how = "cached" if cached else f"collect {r['collect_s']} s, train {r['train_s']} s"
            print(
                f"layer {layer}: held-out FVE {r['fve']:.3f} (linear skip alone {r['fve_linear']:.3f}), "
                f"L0 {r['l0']:.1f}, dead {100 * r['dead_frac']:.1f} % on {r['eval_tokens']} tokens [{how}]"
            )
        df = pd.DataFrame(rows)
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "transcoders.csv", index=False)
        run_id = report.log_run(
            cfg.tracking,
            flatten(to_dict(cfg)),
            {},
            [out / "transcoders.csv"],
            tags={"job": "transcoders", "model": cfg.model.name},
            run_name=cfg.tracking.run_name or f"transcoders {cfg.model.name}",
            stepped=[(r["layer"], {k: r[k] for k in ("fve", "fve_linear", "l0", "dead_frac")}) for r in rows],
        )
        report.announce(run_id, cfg.tracking)
        print(f"transcoders: {len(rows)} layers in {cache_dir(cfg.cache_dir)} [{time.time() - t0:.0f} s]")
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
