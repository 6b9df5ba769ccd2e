# Shared by platform/build.sh, build-node.sh and build-coredns.sh (sourced, not run):
# the pins, the arguments every build script takes, where the binaries go, and Go.
# Each script sets `script` (its name in messages) and `here` (platform/) before sourcing.

# shellcheck source=versions.env
source "$here/versions.env"

log() { printf '[platform/%s %s] %s\n' "$script" "$(date +%H:%M:%S)" "$*" >&2; }

# parse_build_args HELP_LINES "$@": sets force and print_only; `-h` prints the calling
# script's header comment (lines 2..HELP_LINES).
parse_build_args() {
    local help_lines="$1"
    shift
    force=0
    print_only=0
    local arg
    for arg in "$@"; do
        case "$arg" in
            --force) force=1 ;;
            --print-bin-dir) print_only=1 ;;
            -h | --help) sed -n "2,${help_lines}p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) echo "$script: unknown argument: $arg" >&2; exit 2 ;;
        esac
    done
    cache_dir="${LOOPLINE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/loopline}"
    bin_dir="$cache_dir/k8s-${KUBERNETES_VERSION}/bin"
    if [ "$print_only" -eq 1 ]; then
        echo "$bin_dir"
        exit 0
    fi
}

# find_go MESSAGE...: sets GO (from $GO, PATH or /usr/local/go), or prints
# "<script>: MESSAGE" (each argument one line) and exits 3.
find_go() {
    GO="${GO:-}"
    if [ -z "$GO" ]; then
        GO="$(command -v go || true)"
        [ -z "$GO" ] && [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go
    fi
    if [ -z "$GO" ] || ! "$GO" version >/dev/null 2>&1; then
        local line prefix="$script: "
        for line in "$@"; do
            echo "$prefix$line" >&2
            prefix=""
        done
        exit 3
    fi
}

# up_to_date STAMP_NAME: the stamp file in the bin directory holds `$stamp` and every
# program in `binaries` is there.
up_to_date() {
    [ -f "$bin_dir/$1" ] && [ "$(cat "$bin_dir/$1")" = "$stamp" ] || return 1
    local b
    for b in "${binaries[@]}"; do [ -x "$bin_dir/$b" ] || return 1; done
}

# exit_if_built STAMP_NAME WHAT: exit 0 (unless --force) when up to date, checked again
# under the build lock: concurrent builds (two shells, parallel test runs) share one cache.
exit_if_built() {
    local stamp_name="$1" what="$2"
    if [ "$force" -eq 0 ] && up_to_date "$stamp_name"; then
        log "$what up to date in $bin_dir"
        exit 0
    fi
    mkdir -p "$bin_dir"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$bin_dir/$stamp_name.lock"
        log "waiting for the build lock" && flock 9
        if [ "$force" -eq 0 ] && up_to_date "$stamp_name"; then
            log "$what up to date in $bin_dir (built by another process)"
            exit 0
        fi
    fi
}
