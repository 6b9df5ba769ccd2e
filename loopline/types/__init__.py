"""Pydantic types of the Loopline custom resources (Model, Pipeline) and their status."""
