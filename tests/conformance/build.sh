#!/usr/bin/env bash
# Builds the OCI runtime-tools validation suite (offline, from the vendored tarball) into
# ${RUNV_CACHE_DIR:-/var/cache/runv}/runtime-tools/<key> and prints that directory.
# <key> = the tarball's sha256 + `go version` + this script, so a new tarball, a new Go or
# an edit here makes a new build. The build runs in a temporary directory under flock and
# is renamed into place: concurrent or interrupted builds never leave a half-built suite.
#
# Usage: tests/conformance/build.sh [TARBALL]
#   TARBALL defaults to $RUNV_RUNTIME_TOOLS_TARBALL, else
#   <repo>/../shared/third_party/runtime-tools-260e151.tar.gz, else
#   /work/shared/third_party/runtime-tools-260e151.tar.gz.
# Needs Debian's golang-go (1.19) and make; installs them when missing (as root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

tarball=${1:-${RUNV_RUNTIME_TOOLS_TARBALL:-}}
if [[ -z $tarball ]]; then
  for cand in "$repo/../shared/third_party/runtime-tools-260e151.tar.gz" \
    /work/shared/third_party/runtime-tools-260e151.tar.gz; do
    if [[ -f $cand ]]; then
      tarball=$cand
      break
    fi
  done
fi
if [[ -z $tarball || ! -f $tarball ]]; then
  echo "build.sh: runtime-tools tarball not found (${tarball:-looked in ../shared/third_party and /work/shared/third_party}); pass it as the first argument" >&2
  exit 1
fi

missing=()
command -v go >/dev/null || missing+=(golang-go)
command -v make >/dev/null || missing+=(make)
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "build.sh: installing ${missing[*]}" >&2
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

cache=${RUNV_CACHE_DIR:-/var/cache/runv}/runtime-tools
key=$({
  sha256sum <"$tarball"
  go version
  cat "$0"
} | sha256sum | cut -c1-16)
out=$cache/$key
if [[ -f $out/.complete ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [[ -f $out/.complete ]]; then # built by a concurrent run while we waited
  echo "$out"
  exit 0
fi
tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$tarball" -C "$tmp"
src=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n 1)
if [[ ! -f $src/Makefile || ! -d $src/validation ]]; then
  echo "build.sh: $tarball does not look like runtime-tools (no Makefile or validation/ at its top)" >&2
  exit 1
fi
t0=$SECONDS
# The module cache and build cache stay inside the build dir's parent so nothing is
# fetched and nothing lands in $HOME; GOFLAGS=-mod=vendor + GOPROXY=off keep it offline.
if ! (cd "$src" && GOFLAGS=-mod=vendor GOPROXY=off GOCACHE="$cache/.gocache" \
  GOPATH="$tmp/gopath" make tool runtimetest validation-executables) >"$tmp/build.log" 2>&1; then
  tail -n 30 "$tmp/build.log" >&2
  echo "build.sh: make failed in $src (log above)" >&2
  exit 1
fi
n=$(find "$src/validation" -name '*.t' | wc -l)
if [[ $n -eq 0 || ! -x $src/runtimetest || ! -f $src/rootfs-amd64.tar.gz ]]; then
  echo "build.sh: the build produced $n validation/*.t files, runtimetest and rootfs-amd64.tar.gz are needed in $src" >&2
  exit 1
fi
chmod -R go-w "$src"
echo "built $n validation files in $((SECONDS - t0)) s" >"$src/.complete"
rm -rf "$out"
mv "$src" "$out"
echo "$out"
