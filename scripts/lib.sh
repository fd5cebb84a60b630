# shellcheck shell=bash
# Sourced by the top-level scripts: where caches live, the cargo target dir, packages.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export RUNV_CACHE_DIR=${RUNV_CACHE_DIR:-/var/cache/runv}
mkdir -p "$RUNV_CACHE_DIR"
# One target dir per Cargo.lock, outside the clone, so a fresh clone reuses the build.
lock_key=$(sha256sum "$ROOT/Cargo.lock" | cut -c1-16)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$RUNV_CACHE_DIR/target-$lock_key}
export RUNV_TARGET_DIR=$CARGO_TARGET_DIR

# ensure_packages PKG...: installs the Debian packages that are missing.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
}

# prune_targets: keeps the current target dir and removes older ones.
prune_targets() {
  local d
  # Only the Cargo.lock-keyed dirs (target-<16 hex digits>): other target dirs under the
  # cache (a developer's own CARGO_TARGET_DIR) are not ours to remove.
  for d in "$RUNV_CACHE_DIR"/target-[0-9a-f]*; do
    [[ -d $d && $d != "$CARGO_TARGET_DIR" && ${d##*/target-} =~ ^[0-9a-f]{16}$ ]] && rm -rf "$d"
  done
  return 0
}

# host_runs_stock_guests: false when /dev/kvm is kvm_pvm only (see vmm/src/host.rs).
host_runs_stock_guests() {
  [[ -e /dev/kvm ]] || return 1
  if [[ -d /sys/module/kvm_pvm && ! -d /sys/module/kvm_intel && ! -d /sys/module/kvm_amd ]]; then
    return 1
  fi
  return 0
}

# build_initramfs [--no-busybox] INIT_SCRIPT NAME [FILE:GUEST_PATH]...: cached busybox
# initramfs with the extra files of tests/initramfs/build.sh; prints its path. runv's agent
# image is `build_initramfs --no-busybox AGENT agent`.
build_initramfs() {
  local opt=() init name key out spec
  [[ $1 == --no-busybox ]] && { opt=(--no-busybox); shift; }
  init=$1 name=$2
  shift 2
  key=$({
    echo "${opt[@]}"
    cat "$init" "$ROOT/tests/initramfs/build.sh" /bin/busybox
    for spec in "$@"; do echo "$spec"; cat "${spec%%:*}"; done
  } | sha256sum | cut -c1-16)
  out=$RUNV_CACHE_DIR/initramfs/$name-$key.cpio
  if [[ ! -f $out ]]; then
    mkdir -p "$(dirname "$out")"
    "$ROOT/tests/initramfs/build.sh" "${opt[@]}" "$init" "$out" "$@" >/dev/null
  fi
  echo "$out"
}

# build_helper SRC.c: a static guest test helper built from one C file (cached on the
# source and the compiler); prints its path. Needs gcc and libc6-dev.
build_helper() {
  local src=$1 key out
  key=$({ cat "$src"; gcc --version; } | sha256sum | cut -c1-16)
  out=$RUNV_CACHE_DIR/helpers/$(basename "$src" .c)-$key
  if [[ ! -x $out ]]; then
    mkdir -p "$(dirname "$out")"
    gcc -static -O2 -Wall -Wextra -o "$out.tmp.$$" "$src" >&2 && mv -f "$out.tmp.$$" "$out"
  fi
  echo "$out"
}
