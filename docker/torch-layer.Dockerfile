# The torch layer of the training image, built by `loopline images build` (podman, no Docker).
#
# The training image is the runtime image plus this one layer: the training extra's closure
# (torch, its CUDA libraries from PyPI, triton and whatever else the `training` extra adds over
# the runtime requirements), as files at their place in the runtime image's venv. Its inputs
# are the base, requirements/lock.txt and the two requirement lists (runtime.txt, training.txt:
# docker/requirements.py's output, written by the build), and nothing else: a source change
# never rebuilds it, and the training image is composed from the runtime image's layers and
# this layer's blob (loopline/images/compose.py), so the two images share every other layer.
#
# The closure is computed, not listed: a venv gets the runtime requirements (as the runtime
# image's deps stage installs them), then the training ones; docker/closure.py moves every
# file the second install added out to /closure, and fails if it removed one.
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS closure
ARG TORCH_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CACHE_DIR=/var/cache/loopline-pip \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY lock.txt runtime.txt training.txt closure.py ./
# The same cleaning as the runtime image's deps stage (no byte code, no test suites), before
# the snapshot and after the second install, so only the training extra's files differ.
RUN python3 -m venv /opt/loopline/venv \
 && mkdir -p "${PIP_CACHE_DIR}/wheels" \
 && /opt/loopline/venv/bin/python -m pip download --dest "${PIP_CACHE_DIR}/wheels" \
      --constraint lock.txt \
      ${TORCH_INDEX_URL:+--extra-index-url "${TORCH_INDEX_URL}"} \
      --requirement training.txt \
 && /opt/loopline/venv/bin/python -m pip install --no-index \
      --find-links "${PIP_CACHE_DIR}/wheels" --constraint lock.txt \
      --requirement runtime.txt \
 && python3 closure.py clean /opt/loopline/venv \
 && python3 closure.py snapshot /opt/loopline/venv /src/before.json \
 && /opt/loopline/venv/bin/python -m pip install --no-index \
      --find-links "${PIP_CACHE_DIR}/wheels" --constraint lock.txt \
      --requirement training.txt \
 && /opt/loopline/venv/bin/python -c "import torch; print('torch', torch.__version__)" \
 && python3 closure.py clean /opt/loopline/venv \
 && python3 closure.py collect /opt/loopline/venv /src/before.json /closure

# One layer: the closure's files at their paths (opt/loopline/venv/...), nothing else.
FROM scratch
COPY --from=closure /closure/ /
