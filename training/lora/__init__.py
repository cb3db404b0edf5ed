"""LoRA training conditions (DPO, DPO without reference, SFT, SFT+KL, …), their losses and the TRL trainer."""
