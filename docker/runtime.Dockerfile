# syntax=docker/dockerfile:1
# The model server runtime: MLServer with Loopline's runtime
# (loopline.serving.runtime.LooplineRuntime) serving the models under $MLSERVER_MODELS_DIR.
# Seldon Core 2 runs it as the `mlserver` container of a Server and points
# MLSERVER_MODELS_DIR at its agent's folder; standalone it serves /mnt/models. No model is
# baked in: each model's settings name an MLflow model URI that the runtime loads.
# Built on docker/base.Dockerfile.
ARG BASE_IMAGE=loopline/base:0.1.0
FROM ${BASE_IMAGE}
ENV MLSERVER_MODELS_DIR=/mnt/models
# MLServer's REST, gRPC and metrics ports.
EXPOSE 8080 8081 8082
ENTRYPOINT ["/bin/sh", "-c", "exec mlserver start \"$MLSERVER_MODELS_DIR\""]
