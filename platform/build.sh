#!/usr/bin/env bash
# Build the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) and its tools (kwok, helm) at the versions pinned in
# versions.env, into
#
#     ${LOOPLINE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/loopline}/k8s-<version>/bin/
#
# Nothing on the package registries ships kube-apiserver and these machines
# have no container runtime, so we compile it from the Go modules, the way
# envtest users get their binaries. The script is idempotent: a stamp in the
# bin directory records a hash of every input (pins, go.mod/go.sum, the main
# packages, build flags, Go version); when it matches, nothing is rebuilt.
#
# Usage: platform/build.sh [--force] [--print-bin-dir]
# Exit codes: 0 ok, 1 build failed, 3 Go toolchain not found.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script=build.sh
# shellcheck source=lib.sh
source "$here/lib.sh"
parse_build_args 16 "$@"
find_go "the Go toolchain was not found. Loopline compiles its local Kubernetes" \
    "control plane from source and needs Go >= 1.26 (see docs/control-plane.md):" \
    "install Go, put it on PATH (or set GO=/path/to/go) and run this again."

# The committed go.mod files must agree with the pins; pin.sh regenerates them.
grep -qE "^[[:space:]]*(require[[:space:]]+)?k8s\.io/kubernetes ${KUBERNETES_VERSION}\$" "$here/controlplane/go.mod" || {
    echo "build.sh: controlplane/go.mod does not require k8s.io/kubernetes ${KUBERNETES_VERSION}; run platform/pin.sh" >&2
    exit 1
}
grep -qE "^[[:space:]]*(require[[:space:]]+)?go\.etcd\.io/etcd/server/v3 ${ETCD_VERSION}\$" "$here/etcd/go.mod" || {
    echo "build.sh: etcd/go.mod does not require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}; run platform/pin.sh" >&2
    exit 1
}

k8s_major="${KUBERNETES_VERSION#v}"; k8s_major="${k8s_major%%.*}"
k8s_minor="${KUBERNETES_VERSION#v*.}"; k8s_minor="${k8s_minor%%.*}"
helm_k8s_minor="$k8s_minor"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION}"
    k8s_ldflags+=" -X ${pkg}.gitMajor=${k8s_major} -X ${pkg}.gitMinor=${k8s_minor}"
    k8s_ldflags+=" -X ${pkg}.gitTreeState=clean"
done
k8s_tags="selinux,notest"
kwok_ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
helm_ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=${k8s_major}"
helm_ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${helm_k8s_minor}"
helm_ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=${k8s_major}"
helm_ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${helm_k8s_minor}"

binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)

# The stamp: everything that changes the output. `go version` is included
# because a different compiler produces different binaries.
stamp="$(
    {
        cat "$here/versions.env"
        cat "$here/controlplane/go.mod" "$here/controlplane/go.sum"
        cat "$here/etcd/go.mod" "$here/etcd/go.sum"
        find "$here/controlplane" "$here/etcd" -name '*.go' -print0 | sort -z | xargs -0 cat
        echo "$k8s_ldflags|$k8s_tags|$kwok_ldflags|$helm_ldflags|${binaries[*]}"
        "$GO" version
    } | sha256sum | cut -d' ' -f1
)"

exit_if_built .stamp binaries

# Build into a scratch directory, then rename into place: a running cluster
# keeps its (unlinked) old binaries and never sees a half-written file.
work="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0
start=$SECONDS

log "Go: $("$GO" version); output: $bin_dir"
log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (Kubernetes ${KUBERNETES_VERSION}); cold builds take a while"
t=$SECONDS
(cd "$here/controlplane" && "$GO" build -trimpath -tags "$k8s_tags" -ldflags "$k8s_ldflags" -o "$work/" ./cmd/...)
log "  done in $((SECONDS - t))s"

log "building etcd ${ETCD_VERSION}"
t=$SECONDS
(cd "$here/etcd" && "$GO" build -trimpath -ldflags "-s -w" -o "$work/etcd" .)
log "  done in $((SECONDS - t))s"

log "installing kwok ${KWOK_VERSION}"
t=$SECONDS
GOBIN="$work" "$GO" install -trimpath -ldflags "$kwok_ldflags" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
log "  done in $((SECONDS - t))s"

log "installing helm ${HELM_VERSION}"
t=$SECONDS
GOBIN="$work" "$GO" install -trimpath -ldflags "$helm_ldflags" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
log "  done in $((SECONDS - t))s"

for b in "${binaries[@]}"; do
    [ -x "$work/$b" ] || { echo "build.sh: $b was not produced" >&2; exit 1; }
    mv -f "$work/$b" "$bin_dir/$b"
done
echo "$stamp" > "$bin_dir/.stamp.tmp" && mv -f "$bin_dir/.stamp.tmp" "$bin_dir/.stamp"
log "built ${binaries[*]} in $((SECONDS - start))s"
