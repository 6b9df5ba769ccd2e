# syntax=docker/dockerfile:1
# The Loopline operator (kopf): `loopline operator run`. Built on docker/base.Dockerfile.
ARG BASE_IMAGE=loopline/base:0.1.0
FROM ${BASE_IMAGE}
# kopf's liveness endpoint (--liveness=http://0.0.0.0:8080/healthz in the Helm chart).
EXPOSE 8080
ENTRYPOINT ["loopline", "operator", "run"]
CMD ["--liveness=http://0.0.0.0:8080/healthz"]
