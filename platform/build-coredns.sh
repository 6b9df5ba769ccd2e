#!/usr/bin/env bash
# Build CoreDNS for the local cluster's DNS (loopline/cluster/dns.py) from the
# pinned github.com/coredns/coredns module in platform/coredns (a small main
# with the plugins the cluster's Corefile uses), into the same bin directory as
# the control plane:
#
#     ${LOOPLINE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/loopline}/k8s-<version>/bin/coredns
#
# The pin is platform/coredns/go.mod; to move it:
#     cd platform/coredns && go get github.com/coredns/coredns@vX.Y.Z && go mod tidy
# Idempotent: the stamp `.stamp-coredns` records a hash of every input.
#
# Usage: platform/build-coredns.sh [--force] [--print-bin-dir]
# Exit codes: 0 ok, 1 build failed, 3 Go toolchain not found.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script=build-coredns.sh
# shellcheck source=lib.sh
source "$here/lib.sh"
parse_build_args 15 "$@"
find_go "the Go toolchain was not found; CoreDNS is compiled from" \
    "source and needs Go >= 1.26 (see docs/real-node.md)."

coredns_version="$(awk '$1 == "github.com/coredns/coredns" { print $2; exit }
    $1 == "require" && $2 == "github.com/coredns/coredns" { print $3; exit }' "$here/coredns/go.mod")"
[ -n "$coredns_version" ] || {
    echo "build-coredns.sh: coredns/go.mod does not require github.com/coredns/coredns" >&2
    exit 1
}
ldflags="-s -w"

stamp="$(
    {
        cat "$here/coredns/go.mod" "$here/coredns/go.sum"
        find "$here/coredns" -name '*.go' -print0 | sort -z | xargs -0 cat
        echo "$ldflags|coredns"
        "$GO" version
    } | sha256sum | cut -d' ' -f1
)"

binaries=(coredns)
exit_if_built .stamp-coredns "coredns ${coredns_version}"

work="$(mktemp -d "$bin_dir/.build-coredns.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0
start=$SECONDS
log "Go: $("$GO" version); building coredns ${coredns_version} into $bin_dir"
(cd "$here/coredns" && "$GO" build -trimpath -ldflags "$ldflags" -o "$work/coredns" .)
"$work/coredns" -plugins | grep -qx 'kubernetes' || {
    echo "build-coredns.sh: the built coredns lacks the kubernetes plugin" >&2
    exit 1
}
mv -f "$work/coredns" "$bin_dir/coredns"
echo "$stamp" > "$bin_dir/.stamp-coredns.tmp" && mv -f "$bin_dir/.stamp-coredns.tmp" "$bin_dir/.stamp-coredns"
log "built coredns in $((SECONDS - start))s"
