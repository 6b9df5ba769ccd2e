"""Batch inference: score a window of the offline store (or a file) with a registered model."""
