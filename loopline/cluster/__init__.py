"""The local Kubernetes control plane: build, start and stop it on loopback."""
