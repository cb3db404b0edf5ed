"""Fitting one trial's LoRA adapter, the step both ways of running a trial share: in this process
(`training.ablation.trial`) and on each Ray Train worker (`training.ablation.distributed`).

`load_rows` turns the config's `training.ablation.tune_config.DataSpec` into train / eval rows (a file, the seeded
synthetic pairs, or the paper's recipe); `fit_adapter` trains the adapter into the trial's folder, resumable from the
checkpoints beside it (`CHECKPOINTS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.run.tracking import RunRef
from training.ablation.tune_config import AblationConfig, TrialSpec
from training.lora.conditions import Condition, LoraSettings, TrainHParams

CHECKPOINTS = "checkpoints"


def load_rows(data: Any, eos_token: str | None = None) -> tuple[Any, Any]:
    """(train rows, eval rows or None) of a `training.ablation.tune_config.DataSpec`, as `datasets.Dataset`s, deterministic
    in the spec: the file at `data.path`, else `data.synthetic_pairs` seeded synthetic pairs; `layout: paper` runs
    `training.preference.paper_data.load_paper_preferences` (needs the tokenizer's `eos_token`)."""
    from training.preference.data import load_preferences, train_eval_split

    if data.layout == "paper":
        from training.preference.paper_data import load_paper_preferences

        names = {"include": "include_domains", "exclude": "exclude_domains", "seed": "split_seed"}
        names |= {
            k: k
            for k in (
                "domain_column",
                "max_prompt_chars",
                "max_answer_chars",
                "eval_fraction",
                "long_rows",
                "domain_map",
            )
        }
        pd = load_paper_preferences(data.path, eos_token or "", **{k: getattr(data, v) for k, v in names.items()})
        print(f"preference data {data.path}: {pd.summary()}", flush=True)
        return pd.train, (pd.eval if len(pd.eval) else None)
    if data.path:
        source: Any = data.path
    else:
        from training.preference.synthetic import generate_pairs

        source = generate_pairs(
            data.synthetic_pairs, seed=data.synthetic_seed, domains=list(data.synthetic_domains) or None
        )
    ds = load_preferences(source, format=data.format)
    if data.eval_fraction <= 0:
        return ds, None
    tr, ev = train_eval_split(ds, data.eval_fraction, data.split_seed)
    return tr, (ev if len(ev) else None)


def fit_adapter(
    cfg: AblationConfig,
    spec: TrialSpec,
    settings: tuple[Condition, LoraSettings, TrainHParams],
    lm: Any,
    adapter: Path,
    run: RunRef | None,
    **train_kw: Any,
) -> Any:
    """Train a trial's adapter into `adapter` (in process or on one Ray Train worker), resumable from its
    checkpoints beside it (`CHECKPOINTS`); the training loss is logged live to `run`."""
    from training.lora.trainer import step_logger, train

    (cond, lora, hp), (train_ds, eval_ds) = settings, load_rows(cfg.data, lm.tokenizer.eos_token)
    callbacks = [step_logger(run)] if run is not None else []
    kw = {"model": lm, "lora": lora, "hparams": hp, "seed": spec.seed, "eval_data": eval_ds, "callbacks": callbacks}
    checkpoints = {"checkpoint_dir": adapter.parent / CHECKPOINTS, "checkpoint_steps": cfg.resources.checkpoint_steps}
    return train(cond, train_ds, output_dir=adapter, overwrite=True, **kw, **checkpoints, **train_kw)
