#!/usr/bin/env bash
# Build the four Loopline images (base, operator, runtime, monitor) from this checkout.
# Not run in CI (no container engine there); docker/lint.sh lints the Dockerfiles instead.
#
# Usage: TORCH_INDEX_URL=<PyTorch CPU wheel index> docker/build.sh [registry/prefix]
# Tags: <prefix>loopline/<image>:<version of the loopline package>.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
: "${TORCH_INDEX_URL:?set TORCH_INDEX_URL to a PyTorch CPU wheel index (see docker/base.Dockerfile)}"
prefix=${1:+${1%/}/}
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$root/loopline/__init__.py")
engine=${CONTAINER_ENGINE:-docker}

base="${prefix}loopline/base:${version}"
DOCKER_BUILDKIT=1 "$engine" build -f "$root/docker/base.Dockerfile" \
    --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" -t "$base" "$root"
for image in operator runtime monitor; do
    DOCKER_BUILDKIT=1 "$engine" build -f "$root/docker/$image.Dockerfile" \
        --build-arg BASE_IMAGE="$base" -t "${prefix}loopline/${image}:${version}" "$root/docker"
done
echo "built ${prefix}loopline/{base,operator,runtime,monitor}:${version}"
