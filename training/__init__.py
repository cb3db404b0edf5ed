"""What the lab trains (PROTOCOL.md, "Training stages and DPO-component ablation"; "A trained steering vector").

* `training.preference`: preference rows (`data`: load / validate / split / swap, JSONL and Parquet files;
  `paper_data`: the paper's recipe on a local data set; `synthetic` + `synthetic_banks`: seeded labelled pairs).
* `training.lora`: the named conditions and presets (`conditions`), pure losses (`losses`), the TRL trainer
  subclasses (`trainers`) and how a condition becomes one (`trl_setup`), `train(...)` (`trainer`), the random-LoRA
  control (`random_adapter`), DeepSpeed plumbing (`ds_config`).
* `training.ablation`: the DPO-component ablation as Ray Tune trials: config and search space (`tune_config`), one
  trial (`trial`, `fitting`; `distributed` for Ray Train + DeepSpeed), its evaluation (`evaluate`), the grid
  (`tune`), the report (`ablation_report`).
* `training.bias`: the trained steering vector (a bias): loss, loop, Tune arms, the paper code's evaluation.
* `training.transcoder`: transcoders fitted on a model's own activations (corpus, fit, per-layer cache).

Submodules are imported explicitly (nothing heavy is imported here).
"""
