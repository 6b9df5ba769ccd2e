"""Torch models and the MLflow pyfunc bundle that training writes and serving loads."""
