#!/usr/bin/env bash
# Build the real node's binaries for `loopline cluster up --runtime containerd`:
# kubelet and kube-proxy from the same pinned k8s.io/kubernetes as the control
# plane (platform/node: upstream's mains in a module of their own, so build.sh's
# control plane is not rebuilt when they change), and the static pod-sandbox
# program `pause` (platform/node/pause), into
#
#     ${LOOPLINE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/loopline}/k8s-<version>/bin/
#
# containerd, runc and the CNI plugins come from Debian (scripts/install-system-deps.sh).
# Idempotent like build.sh: the stamp `.stamp-node` in the bin directory records a
# hash of every input; when it matches and the binaries are there, nothing is built.
#
# Usage: platform/build-node.sh [--force] [--print-bin-dir]
# Exit codes: 0 ok, 1 build failed, 3 Go toolchain not found.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script=build-node.sh
# shellcheck source=lib.sh
source "$here/lib.sh"
parse_build_args 15 "$@"
find_go "the Go toolchain was not found; the node's kubelet and kube-proxy" \
    "are compiled from source and need Go >= 1.24 (see docs/real-node.md)."

grep -qE "^[[:space:]]*(require[[:space:]]+)?k8s\.io/kubernetes ${KUBERNETES_VERSION}\$" "$here/node/go.mod" || {
    echo "build-node.sh: node/go.mod does not require k8s.io/kubernetes ${KUBERNETES_VERSION}; run platform/pin.sh" >&2
    exit 1
}

k8s_major="${KUBERNETES_VERSION#v}"; k8s_major="${k8s_major%%.*}"
k8s_minor="${KUBERNETES_VERSION#v*.}"; k8s_minor="${k8s_minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION}"
    k8s_ldflags+=" -X ${pkg}.gitMajor=${k8s_major} -X ${pkg}.gitMinor=${k8s_minor}"
    k8s_ldflags+=" -X ${pkg}.gitTreeState=clean"
done
k8s_tags="selinux,notest"
pause_ldflags="-s -w"

binaries=(kubelet kube-proxy pause)

stamp="$(
    {
        cat "$here/versions.env"
        cat "$here/node/go.mod" "$here/node/go.sum"
        find "$here/node" -name '*.go' -print0 | sort -z | xargs -0 cat
        echo "$k8s_ldflags|$k8s_tags|$pause_ldflags|${binaries[*]}"
        "$GO" version
    } | sha256sum | cut -d' ' -f1
)"

exit_if_built .stamp-node "node binaries"

# Build into a scratch directory, then rename into place: a running node keeps
# its (unlinked) old binaries and never sees a half-written file.
work="$(mktemp -d "$bin_dir/.build-node.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0
start=$SECONDS

log "Go: $("$GO" version); output: $bin_dir"
log "building kubelet and kube-proxy (Kubernetes ${KUBERNETES_VERSION}); a cold build takes a while"
t=$SECONDS
(cd "$here/node" && "$GO" build -trimpath -tags "$k8s_tags" -ldflags "$k8s_ldflags" -o "$work/" ./cmd/...)
log "  done in $((SECONDS - t))s"

log "building pause"
(cd "$here/node" && "$GO" build -trimpath -ldflags "$pause_ldflags" -o "$work/pause" ./pause)

for b in "${binaries[@]}"; do
    [ -x "$work/$b" ] || { echo "build-node.sh: $b was not produced" >&2; exit 1; }
    mv -f "$work/$b" "$bin_dir/$b"
done
echo "$stamp" > "$bin_dir/.stamp-node.tmp" && mv -f "$bin_dir/.stamp-node.tmp" "$bin_dir/.stamp-node"
log "built ${binaries[*]} in $((SECONDS - start))s"
