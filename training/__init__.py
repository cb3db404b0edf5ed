"""LoRA training for the DPO-component ablation (PROTOCOL.md, "Training stages and DPO-component ablation").

* `training.data`: preference-data loaders (JSONL / Parquet / save_to_disk, read by `training.data_io`), validation,
  split, domains, swaps.
* `training.synthetic`: a seeded generator of labelled preference pairs (its word banks: `training.synthetic_banks`).
* `training.conditions`: the named conditions and the paper's LoRA / optimiser presets.
* `training.losses`, `training.trainers`: the losses and the minimal TRL subclasses that compute them.
* `training.trainer`: `train(condition, data, ...) -> TrainResult`, the one entry point (TRL setup: `training.trl_setup`).

Submodules are imported explicitly (nothing heavy is imported here).
"""
