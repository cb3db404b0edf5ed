"""Batched steered generation: the decode loop, shared-prefix attention, the runner."""
