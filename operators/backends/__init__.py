"""Backends the operators drive, chosen by short name in settings (pipelines, serving)."""
