"""The model server runtime (MLServer, Open Inference Protocol) and serving helpers."""
