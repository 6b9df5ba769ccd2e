# syntax=docker/dockerfile:1
# The Loopline base image: this repository's wheel and its locked dependencies in a venv, on a
# slim Python, running as an unprivileged user. The operator, model server runtime and monitor
# images are this image with another entry point (one package, three images).
#
# Build from the repository root (docker/build.sh does all four):
#   docker build -f docker/base.Dockerfile \
#     --build-arg TORCH_INDEX_URL=<your PyTorch CPU wheel index> -t loopline/base:0.1.0 .
#
# CPU only: requirements/lock.txt pins torch together with the CUDA libraries PyPI's Linux
# wheel pulls in (several GB). The lock is used here as constraints only, and torch comes from
# the CPU wheel index given as TORCH_INDEX_URL (its `2.13.0+cpu` satisfies the pin `2.13.0`
# and needs no CUDA packages). For a GPU image, build with a CUDA index instead.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/ requirements/
COPY loopline/ loopline/
COPY operators/ operators/
COPY pipelines/ pipelines/
COPY components/ components/
COPY serving/ serving/
COPY monitoring/ monitoring/
RUN test -n "${TORCH_INDEX_URL}" \
      || { echo "set --build-arg TORCH_INDEX_URL to a PyTorch CPU wheel index" >&2; exit 1; } \
 && python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/loopline/venv \
 && /opt/loopline/venv/bin/python -m pip install \
      --constraint requirements/lock.txt \
      --extra-index-url "${TORCH_INDEX_URL}" \
      /wheels/loopline-*.whl \
 && /opt/loopline/venv/bin/python -m pip check \
 && /opt/loopline/venv/bin/python -c "import torch; assert not torch.version.cuda, torch.__version__"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="loopline" \
      org.opencontainers.image.description="Loopline: operator, model server runtime, drift monitor" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 loopline \
 && useradd --system --uid 10001 --gid loopline --home-dir /tmp --shell /usr/sbin/nologin loopline \
 && mkdir -p /var/lib/loopline \
 && chown loopline:loopline /var/lib/loopline
COPY --from=build /opt/loopline/venv /opt/loopline/venv
# The Feast repository definitions; a deployment replaces feature_store.yaml (the Helm chart
# mounts backends.feast.featureStoreYaml over it).
COPY feature_repo/ /opt/loopline/feature_repo/
ENV PATH=/opt/loopline/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LOOPLINE_STATE_DIR=/var/lib/loopline \
    LOOPLINE_CACHE_DIR=/tmp/loopline-cache \
    LOOPLINE_OPERATOR_FEATURE_REPO=/opt/loopline/feature_repo
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["loopline"]
CMD ["--help"]
