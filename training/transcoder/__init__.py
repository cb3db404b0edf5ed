"""Transcoders trained on a model's own activations: the corpus they read, the fit, the per-layer cache."""
