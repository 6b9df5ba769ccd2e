"""Loopline: a Kubernetes-native MLOps platform whose models keep themselves good."""

__version__ = "0.1.0"
