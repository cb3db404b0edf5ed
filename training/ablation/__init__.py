"""The DPO-component ablation fan-out: one Tune trial per condition (train, then evaluate), Ray Train + DeepSpeed."""
