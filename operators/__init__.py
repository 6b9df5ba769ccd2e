"""Kopf operators for Model and Pipeline: thin handlers, pure builders, pluggable backends."""
