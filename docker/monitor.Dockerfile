# syntax=docker/dockerfile:1
# The drift monitor of one Model: `loopline monitor serve --model <name> ...`.
# Built on docker/base.Dockerfile.
ARG BASE_IMAGE=loopline/base:0.1.0
FROM ${BASE_IMAGE}
EXPOSE 8090
ENTRYPOINT ["loopline", "monitor", "serve"]
CMD ["--help"]
