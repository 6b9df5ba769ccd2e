#!/usr/bin/env bash
# Create (once) or reuse the project's Python environment, then link it as ./.venv.
#
# The venv holds several GB (torch brings CUDA libraries even on CPU-only machines), so it lives
# outside the clone under the cache, keyed by the lock file, the interpreter and the clone's
# path: a fresh clone at the same path (CI's) reuses it in seconds, and a changed pin builds a
# new one beside the old. The path is part of the key because the venv holds an editable
# install of the clone: shared between two clones, each `make` would point the other's
# running tests and servers at its own code.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${LOOPLINE_CACHE_DIR:-$HOME/.cache/loopline}
python=${LOOPLINE_PYTHON:-python3.11}
lock=$root/requirements/lock.txt

if ! command -v "$python" >/dev/null 2>&1; then
  echo "loopline: $python not found. Install Python 3.11 (or set LOOPLINE_PYTHON to a 3.11/3.12 interpreter)." >&2
  exit 1
fi

key=$( { cat "$lock"; "$python" -c 'import sys; print(sys.version)'; echo "$root"; } | sha256sum | cut -c1-16)
venv=$cache/venvs/$key
mkdir -p "$cache/venvs"

# One builder at a time: parallel `make` targets (or engineers) share the same cache.
exec 9>"$cache/venvs/.lock"
flock 9

if [ ! -f "$venv/.complete" ]; then
  echo "loopline: creating the Python environment in $venv (first run: several minutes)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade "pip>=24.2"
  "$venv/bin/python" -m pip install --quiet --no-deps -r "$lock"
  "$venv/bin/python" -m pip check >&2
  touch "$venv/.complete"
fi

# A clone moved to this path, or a changed pyproject, re-points the editable install.
want="$root $(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$venv/.editable" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root"
  echo "$want" >"$venv/.editable"
fi

ln -sfn "$venv" "$root/.venv"
