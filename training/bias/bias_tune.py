"""The steering-vector fan-out (jobs/steering_vector.py): one Ray Tune trial per arm — `baseline` (no bias: the
"before") and one per bias layer × seed — each loading the model, training its bias (training/bias/bias_vector.py) and
evaluating it with the concept-injection flow on the HELD-OUT concepts of the stored split.

Evaluation of an arm: `lab.experiments.concept_injection.run_sweep(..., lm=lm, edits=[Bias("mlp_out.L", bias)], edits_tag=<bias
fingerprint>)` — the sweep computes the held-out concept vectors from the UNEDITED model and applies the bias to
every forward pass of every trial (shared prefix included); trial ids carry the fingerprint. Each arm still writes
its own output dir. Trials hold held-out concept injections, no-injection controls and the sweep's `random` /
`norm_matched` vector controls. Training saves a resumable checkpoint in arms/<arm>/checkpoint/ every
`resources.checkpoint_steps` steps: an arm killed mid-training restarts from it (when the same settings wrote it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lab.config import ModelConfig, from_dict, to_dict
from lab.errors import LabError
from lab.experiments.concept_injection import JudgeConfig
from lab.protocol.trials import SweepConfig
from lab.run.tracking import TrackingConfig
from training.bias.bias_vector import BiasTrainConfig


@dataclass(frozen=True)
class HeldoutEval:
    """The held-out evaluation (identical for every arm). `sweep.concepts` is replaced by the held-out concepts."""

    n_heldout: int = field(default=100, metadata={"help": "first N held-out concepts of the stored split"})
    sweep: SweepConfig = field(
        default_factory=lambda: SweepConfig(
            trials_per_concept=10, controls=("random", "norm_matched"), temperature=1.0, max_new_tokens=100
        ),
        metadata={"help": "evaluation trials; concepts: the held-out ones"},
    )
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "grades the evaluation answers"})
    batch_size: int = field(default=16, metadata={"help": "rows per generate() call"})
    shard_size: int = field(default=64, metadata={"help": "trials per stored Parquet shard"})
    paper_variant: bool = field(
        default=False,
        metadata={"help": "also the paper code's evaluation (own setup replies, steering before the trial turn only)"},
    )
    paper_setup_tokens: int = field(default=100, metadata={"help": "max new tokens of each own setup reply"})
    protocol: Literal["lab", "paper"] = field(
        default="lab",
        metadata={
            "help": "lab: the held-out concepts, injected from 'Trial n' through the answer; paper: 14's own "
            "evaluation as the arm's numbers — all 500 concepts (training ones included), steering only the tokens "
            "before the trial turn (training.bias.bias_paper_eval); preset: 14's evaluate-bias-sweep, layers 20-60 × "
            "strengths 1-8, 20 trial numbers, greedy (14:1197-1199, 1461)"
        },
    )

    def __post_init__(self) -> None:
        if not 1 <= self.n_heldout <= 100:
            raise LabError("evaluation.n_heldout must be in 1..100 (the stored split holds 100)")
        if not {"random", "norm_matched"} & set(self.sweep.controls):
            raise LabError(
                "evaluation.sweep.controls must include random or norm_matched (the concept-specificity guard)"
            )


@dataclass(frozen=True)
class Resources:
    cpus: float = field(default=1.0, metadata={"help": "Ray CPUs reserved per arm"})
    threads: int = field(default=2, metadata={"help": "torch threads per trial"})
    max_concurrent_trials: int = field(default=1, metadata={"help": "arms running at once"})
    max_failures: int = field(default=0, metadata={"help": "retries of a failed arm (tune.FailureConfig)"})
    checkpoint_steps: int = field(default=50, metadata={"help": "resumable bias checkpoint every N steps (0 = off)"})

    def __post_init__(self) -> None:
        if self.checkpoint_steps < 0:
            raise LabError("resources.checkpoint_steps must be >= 0 (0 = no checkpoints)")


@dataclass(frozen=True)
class SteeringVectorConfig:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the frozen model"})
    bias: BiasTrainConfig = field(default_factory=BiasTrainConfig, metadata={"help": "how each arm's bias is trained"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "bias.seed of the arms: one arm per layer × seed"})
    evaluation: HeldoutEval = field(default_factory=HeldoutEval, metadata={"help": "held-out evaluation of every arm"})
    resources: Resources = field(default_factory=Resources, metadata={"help": "what each arm (Tune trial) reserves"})
    tracking: TrackingConfig = field(
        default_factory=lambda: TrackingConfig(experiment="steering-vector"), metadata={"help": "a child run per arm"}
    )
    output_dir: str = field(default="results/steering-vector", metadata={"help": "arms/, report/, tune/, vectors/"})
    address: str | None = field(default=None, metadata={"help": "Ray address; empty: $RAY_ADDRESS or a local Ray"})
    ray_cpus: float | None = field(default=None, metadata={"help": "CPUs of a local Ray; empty: all cores"})

    def __post_init__(self) -> None:
        if not self.seeds:
            raise LabError("seeds must not be empty")
        if not self.bias.layers and not self.bias.all_layers:
            raise LabError("bias.layers is empty (the layers to sweep) and bias.all_layers is false")


def arms(cfg: SteeringVectorConfig) -> dict[str, dict[str, Any]]:
    """{arm name: {layer, seed}}: the baseline first, then every bias layer × seed (or one all-layer arm per seed)."""
    out: dict[str, dict[str, Any]] = {"baseline": {"layer": -1, "seed": -1}}
    layers: list[int | str] = ["all"] if cfg.bias.all_layers else list(cfg.bias.layers)
    for layer in layers:
        for seed in cfg.seeds:
            out[f"L{layer}_seed{seed}"] = {"layer": layer, "seed": seed}
    return out


def with_absolute_paths(cfg: SteeringVectorConfig) -> SteeringVectorConfig:
    """Absolute output dir and sqlite URI: Tune runs each trial in its own working directory."""
    from lab.run.tracking import resolve_uri

    uri = resolve_uri(cfg.tracking)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    return dataclasses.replace(
        cfg, output_dir=str(Path(cfg.output_dir).resolve()), tracking=dataclasses.replace(cfg.tracking, uri=uri)
    )


def heldout_injection_config(cfg: SteeringVectorConfig, heldout: tuple[str, ...], out: Path) -> Any:
    from lab.experiments.concept_injection import InjectionConfig
    from lab.run.parallel import FanOutConfig

    ev = cfg.evaluation
    return InjectionConfig(
        model=cfg.model,
        sweep=dataclasses.replace(ev.sweep, concepts=heldout),
        runner=FanOutConfig(
            num_actors=0,
            cpus_per_actor=0,
            threads=cfg.resources.threads,
            batch_size=ev.batch_size,
            shard_size=ev.shard_size,
        ),
        judge=ev.judge,
        tracking=TrackingConfig(enabled=False),
        output_dir=str(out / "eval" / "trials"),
        cache_dir=str(Path(cfg.output_dir) / "vectors"),
    )


def run_arm(cfg: SteeringVectorConfig, arm: str, parent_run_id: str | None = None) -> dict[str, Any]:
    """Train (unless baseline) and evaluate one arm; log its MLflow child run. Returns its rates."""
    from analysis.bias_guards import arm_rates
    from lab.config import flatten
    from lab.experiments.concept_injection import model_key, run_sweep, vector_cache_dir
    from lab.model.loading import load, threads
    from lab.run import store, tracking
    from lab.steer.interventions import Bias
    from training.bias.bias_vector import fingerprint, save_bias, train_bias
    from training.bias.examples import stored_split

    meta = arms(cfg)[arm]
    out = Path(cfg.output_dir) / "arms" / arm
    done = stored_arm(cfg, arm)
    if done is not None:  # finished by an earlier run with the same settings: nothing is trained or evaluated again
        return done
    ckpt = _keep_checkpoint(cfg, arm, out)
    split = stored_split(cfg.bias.split_seed)
    heldout = split.heldout[: cfg.evaluation.n_heldout]
    if cfg.evaluation.protocol == "paper":  # the paper evaluates every concept, those it trained on included
        from lab.protocol.words import select_concepts

        heldout = tuple(select_concepts("all"))
    inj = heldout_injection_config(cfg, heldout, out)
    t0 = time.time()
    threads(cfg.resources.threads)
    lm = load(cfg.model)
    cache, key = vector_cache_dir(inj), model_key(inj.model)
    tags = {"job": "steering_vector", "arm": arm, "layer": str(meta["layer"]), "seed": str(meta["seed"])}
    params = flatten(to_dict(cfg.bias)) | {"arm": arm, "model": cfg.model.name, "n_heldout": len(heldout)}
    ctx = (
        tracking.run(cfg.tracking, params, tags, run_name=arm, parent_run_id=parent_run_id)
        if cfg.tracking.enabled
        else contextlib.nullcontext()
    )
    with ctx as run:
        bias: dict[str, Any] = {}
        result: dict[str, Any] = {}
        if arm != "baseline":
            bcfg = dataclasses.replace(
                cfg.bias, seed=meta["seed"], layers=() if meta["layer"] == "all" else (meta["layer"],)
            )
            res = train_bias(
                lm,
                split,
                bcfg,
                cache,
                key,
                on_step=(lambda s, m: tracking.log_metrics(m, step=s)) if run is not None else None,
                checkpoint=ckpt,
            )
            bias = res.bias
            save_bias(
                out / "bias",
                res,
                {
                    "model": cfg.model.name,
                    "arm": arm,
                    "site": cfg.bias.site,
                    "split_seed": cfg.bias.split_seed,
                    "config": to_dict(bcfg),
                },
            )
            result |= {
                "train_steps": res.steps,
                "best_step": res.best_step,
                "first_loss": res.train_losses[0],
                "last_loss": res.train_losses[-1],
                "bias_norm": math.sqrt(sum(float(v.norm()) ** 2 for v in bias.values())),
                "val_loss_start": res.val_losses[0][1] if res.val_losses else math.nan,
                "val_loss_best": min(v for _, v in res.val_losses) if res.val_losses else math.nan,
                "fingerprint": fingerprint(bias),
            }
        t_eval = time.time()
        edits = [Bias(site, v) for site, v in bias.items()]
        if cfg.evaluation.protocol == "paper":
            from training.bias.bias_paper_eval import paper_eval

            pdf = paper_eval(lm, inj, edits, out / "eval_paper" / "trials", cfg.evaluation.paper_setup_tokens)
            rates = arm_rates(pdf, heldout) | {"evaluation_protocol": "paper"}
        else:
            res = run_sweep(inj, progress=False, lm=lm, edits=edits, edits_tag=fingerprint(bias) if bias else "")
            ids = {t.trial_id for t in res["plan"].trials}
            df = store.read(inj.output_dir)
            rates = arm_rates(df[df.trial_id.isin(ids)], heldout) | {"evaluation_protocol": "lab"}
        if cfg.evaluation.paper_variant and cfg.evaluation.protocol == "lab":
            from training.bias.bias_paper_eval import paper_eval

            pdf = paper_eval(lm, inj, edits, out / "eval_paper" / "trials", cfg.evaluation.paper_setup_tokens)
            rates |= {f"paper/{k}": v for k, v in arm_rates(pdf, heldout).items()}
        result |= rates | {"eval_seconds": time.time() - t_eval, "arm_seconds": time.time() - t0}
        result |= {"model": cfg.model.name, "concepts_evaluated": len(heldout)}
        if run is not None:
            tracking.log_metrics(result)
            tracking.log_artifacts(*[p for p in (out / "bias" / "bias.json",) if p.exists()])
            result["mlflow_run_id"] = run.info.run_id
    store.save_result(out / "result.json", _arm_settings(cfg, arm), result | {"arm": arm})
    shutil.rmtree(out / "checkpoint", ignore_errors=True)  # the arm is stored: nothing left to resume
    return result | {"arm": arm}


def _keep_checkpoint(cfg: SteeringVectorConfig, arm: str, out: Path) -> Any:
    """Empty the arm's folder but keep checkpoint/ if the same settings wrote it; the checkpoint to train with."""
    from lab.run import store
    from training.bias.bias_vector import BiasCheckpoint

    ck, every = store.fresh_dir(out, "checkpoint", _arm_settings(cfg, arm)), cfg.resources.checkpoint_steps
    return BiasCheckpoint(ck / "bias.pt", every) if every > 0 and arm != "baseline" else None


def _arm_settings(cfg: SteeringVectorConfig, arm: str) -> dict[str, Any]:
    """What determines an arm's bias and its evaluation (not the resources it ran on)."""
    keep = {k: v for k, v in to_dict(cfg).items() if k in ("model", "bias", "evaluation", "sweep", "judge")}
    return keep | {"arm": arm, "meta": arms(cfg)[arm]}


def stored_arm(cfg: SteeringVectorConfig, arm: str) -> dict[str, Any] | None:
    """The arm's stored result (<output_dir>/arms/<arm>/result.json) if the same settings made it."""
    from lab.run import store

    return store.load_result(Path(cfg.output_dir) / "arms" / arm / "result.json", _arm_settings(cfg, arm))


def arm_trainable(config: dict[str, Any], job: dict[str, Any], parent_run_id: str | None) -> None:
    from ray import tune

    tune.report(run_arm(from_dict(SteeringVectorConfig, job), config["arm"], parent_run_id))


def fit_arms(cfg: SteeringVectorConfig, parent_run_id: str | None) -> Any:
    """A grid over the arms (baseline + bias layer × seed), `max_concurrent_trials` at a time; the ResultGrid."""
    from ray import tune

    from lab.run.parallel import tune_grid

    r = cfg.resources
    return tune_grid(
        arm_trainable,
        {"arm": tune.grid_search(list(arms(cfg)))},
        Path(cfg.output_dir) / "tune",
        f"steering-vector-{time.strftime('%Y%m%d-%H%M%S')}",
        resources={"cpu": r.cpus},
        params={"job": to_dict(cfg), "parent_run_id": parent_run_id},
        address=cfg.address,
        num_cpus=cfg.ray_cpus,
        max_concurrent=r.max_concurrent_trials,
        max_failures=r.max_failures,
        trial_name=lambda c: c["arm"],
        verbose=1,
    )


def annotate_children(
    cfg: SteeringVectorConfig, run_ids: dict[str, Any], before: dict[str, float], verdicts: dict[str, Any]
) -> None:
    """Each arm's child run gets the baseline's rates as `before/*`, the verdict flags as tags, verdict.txt."""
    from analysis.bias_report import SHOWN
    from lab.run import tracking

    for arm, rid in run_ids.items():
        if not rid or arm not in verdicts:
            continue
        ref = tracking.RunRef(str(cfg.tracking.uri), rid)
        tracking.log_to_run(ref, {f"before/{m}": before.get(m, math.nan) for m in SHOWN})
        tracking.tag_run(ref, {f"verdict.{k}": v for k, v in verdicts[arm].items() if k != "lines"})
        text = Path(cfg.output_dir) / "arms" / arm / "verdict.txt"
        text.write_text("\n".join(verdicts[arm]["lines"]) + "\n")
        tracking.log_artifacts_to_run(ref, text)
