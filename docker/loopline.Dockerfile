# Loopline's runtime image, built by `loopline images build` (make images) with podman, no Docker:
# the operator, the model server runtime (MLServer + LooplineRuntime) and the drift monitor; no
# torch, no CUDA (FLAVOUR=runtime WITHOUT=torch).
#
# The training image is not built from here: it is this image plus one layer, the `training`
# extra's closure (docker/torch-layer.Dockerfile), inserted after the dependency layers that the
# `LABEL org.loopline.dependency-layers` below marks (loopline/images/compose.py). So a source
# change rebuilds neither the venv nor the torch layer, and the two images share every other
# layer.
#
# One package, one Dockerfile: the stages are
#   requirements  the requirement list of the flavour, read off pyproject.toml
#   deps          a venv with those requirements under requirements/lock.txt's constraints;
#                 it sees no source file, so a source change does not reinstall it
#   wheel         the wheel of this checkout
#   (final)       the venv and the wheel on the base, run as uid/gid 10001
#
# BASE_IMAGE is loopline/debian-base (docker/debian-base.sh: Debian bookworm's minbase with
# Python, made by mmdebstrap from apt sources). The build context is what
# docker/loopline.Dockerfile.dockerignore allows, and the image's tag hashes exactly that
# (loopline/images/plan.py). The build mounts the host's pip configuration at /etc/pip.conf and
# a wheel cache at /var/cache/loopline-pip, so packages come from wherever this machine gets
# them.
# No default: the plan passes the base by its content tag.
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS requirements
ARG EXTRAS=""
ARG WITHOUT=""
WORKDIR /src
COPY pyproject.toml ./
COPY requirements/ requirements/
COPY docker/requirements.py docker/
RUN python3 docker/requirements.py --extras "${EXTRAS}" --without "${WITHOUT}" \
      > /requirements.txt

FROM ${BASE_IMAGE} AS deps
ARG FLAVOUR=runtime
ARG TORCH_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CACHE_DIR=/var/cache/loopline-pip \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/lock.txt ./
COPY --from=requirements /requirements.txt ./
# Wheels are downloaded into the mounted cache first and installed from it without an index,
# so a rebuild (a changed lock, another flavour) downloads only what it lacks. The runtime
# flavour must come out without torch and without CUDA libraries (a dependency that pulls them
# back in fails the build here); the training flavour must import torch. Byte code and the
# test suites of the dependencies are left out of the layer.
RUN python3 -m venv /opt/loopline/venv \
 && mkdir -p "${PIP_CACHE_DIR}/wheels" \
 && /opt/loopline/venv/bin/python -m pip download --dest "${PIP_CACHE_DIR}/wheels" \
      --constraint lock.txt \
      ${TORCH_INDEX_URL:+--extra-index-url "${TORCH_INDEX_URL}"} \
      --requirement requirements.txt \
 && /opt/loopline/venv/bin/python -m pip install --no-index \
      --find-links "${PIP_CACHE_DIR}/wheels" --constraint lock.txt \
      --requirement requirements.txt \
 && if [ "${FLAVOUR}" = runtime ]; then \
      /opt/loopline/venv/bin/python -c "import importlib.metadata as m, importlib.util as u, sys; cuda = sorted(n for n in (d.metadata['Name'] for d in m.distributions()) if n.startswith('nvidia-') or n == 'triton'); sys.exit('torch in a runtime image' if u.find_spec('torch') else f'CUDA packages in a runtime image: {cuda}' if cuda else 0)"; \
    else \
      /opt/loopline/venv/bin/python -c "import torch; print('torch', torch.__version__)"; \
    fi \
 && find /opt/loopline/venv -name __pycache__ -prune -exec rm -rf {} + \
 && find /opt/loopline/venv/lib/python3.11/site-packages -mindepth 2 -type d \
      \( -name tests -o -name test \) -prune -exec rm -rf {} +

FROM ${BASE_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/ requirements/
COPY loopline/ loopline/
COPY operators/ operators/
COPY pipelines/ pipelines/
COPY components/ components/
COPY serving/ serving/
COPY monitoring/ monitoring/
RUN python3 -m venv /tmp/build \
 && /tmp/build/bin/python -m pip wheel --no-deps --wheel-dir /wheels .

FROM ${BASE_IMAGE}
ARG FLAVOUR=runtime
LABEL org.opencontainers.image.title="loopline-${FLAVOUR}" \
      org.opencontainers.image.description="Loopline ${FLAVOUR} image" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 loopline \
 && useradd --uid 10001 --gid loopline --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin loopline \
 && mkdir -p /var/lib/loopline \
 && chown loopline:loopline /var/lib/loopline
COPY --from=deps /opt/loopline/venv /opt/loopline/venv
# Everything above depends on the base and the requirements only; everything below on the
# source. The training image's torch layer goes here (loopline/images/compose.py finds it by
# this label in the history).
LABEL org.loopline.dependency-layers="base, user, venv"
# The Feast repository definitions; a deployment replaces feature_store.yaml (the Helm chart
# mounts backends.feast.featureStoreYaml over it).
COPY feature_repo/ /opt/loopline/feature_repo/
COPY --from=wheel /wheels/ /opt/loopline/wheels/
# The wheel goes in last and alone (a small layer); `loopline --help` imports every command,
# so a module the wheel left out fails the build instead of the first pod.
RUN /opt/loopline/venv/bin/python -m pip install --no-deps --no-index --no-cache-dir \
      --disable-pip-version-check /opt/loopline/wheels/loopline-*.whl \
 && rm -rf /opt/loopline/wheels \
 && /opt/loopline/venv/bin/loopline --help >/dev/null
# Writable places for a read-only root filesystem: HOME and the cache are under /tmp and the
# state under /var/lib/loopline (the chart mounts emptyDirs on both).
ENV PATH=/opt/loopline/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LOOPLINE_STATE_DIR=/var/lib/loopline \
    LOOPLINE_CACHE_DIR=/tmp/loopline-cache \
    LOOPLINE_OPERATOR_FEATURE_REPO=/opt/loopline/feature_repo \
    MLSERVER_MODELS_DIR=/mnt/models
# kopf's liveness (8080), MLServer's REST, gRPC and metrics (8080-8082), the drift monitor (8090).
EXPOSE 8080 8081 8082 8090
WORKDIR /tmp
USER 10001:10001
# One entry point for every role: the chart's containers name the command (`loopline operator
# run`, `loopline monitor serve`; Seldon Servers run `mlserver start "$MLSERVER_MODELS_DIR"`).
ENTRYPOINT ["loopline"]
CMD ["--help"]
