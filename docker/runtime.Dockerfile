# syntax=docker/dockerfile:1
# The model server runtime: MLServer with Loopline's runtime
# (loopline.serving.runtime.LooplineRuntime), serving the models whose model-settings.json
# are under /mnt/models (Seldon Core 2's agent puts them there). No model is baked in: each
# model-settings.json names an MLflow model URI that the runtime loads at start.
# Built on docker/base.Dockerfile.
ARG BASE_IMAGE=loopline/base:0.1.0
FROM ${BASE_IMAGE}
ENV MLSERVER_MODELS_DIR=/mnt/models
# MLServer's REST, gRPC and metrics ports.
EXPOSE 8080 8081 8082
ENTRYPOINT ["mlserver", "start"]
CMD ["/mnt/models"]
