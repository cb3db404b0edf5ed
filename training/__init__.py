"""LoRA training for the DPO-component ablation (PROTOCOL.md, "Training stages and DPO-component ablation").

* `training.preference.data`: preference-data loaders (JSONL / Parquet / save_to_disk, read by `training.preference.data_io`), validation,
  split, domains, swaps.
* `training.preference.synthetic`: a seeded generator of labelled preference pairs (its word banks: `training.preference.synthetic_banks`).
* `training.lora.conditions`: the named conditions and the paper's LoRA / optimiser presets.
* `training.lora.losses`, `training.lora.trainers`: the losses and the minimal TRL subclasses that compute them.
* `training.lora.trainer`: `train(condition, data, ...) -> TrainResult`, the one entry point (TRL setup: `training.lora.trl_setup`).

Submodules are imported explicitly (nothing heavy is imported here).
"""
